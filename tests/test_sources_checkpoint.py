"""``--weights``: a weights name of the chosen source or a readable file, never silently
something else; local checkpoints (torch and safetensors) and their one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm
from conftest import SAMPLES
from typer.testing import CliRunner

from densecls.cli import app
from densecls.errors import DenseclsError, OptionError
from densecls.sources import categories_for, load_model
from densecls.sources.checkpoint import as_path, mismatch_summary, short_reason

runner = CliRunner()


def _resnet18_checkpoint(path: Path, num_classes: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    state = tvm.resnet18(num_classes=num_classes).state_dict()
    torch.save(state, path)
    return state


# --- a name the source does not know is an error, not the stock weights -----------------


@pytest.mark.parametrize("weights", ["checkpoint", "IMAGENET1K_V9", "finetuned"])
def test_embedded_model_refuses_an_unknown_weights_name(weights: str) -> None:
    expected = (
        f"--weights {weights!r}: not a weights name of efficientnet_lite0 nor an existing "
        "file; use DEFAULT or the path of a local state_dict file"
    )
    with pytest.raises(DenseclsError) as err:
        load_model(weights=weights)
    assert str(err.value) == expected
    assert not isinstance(err.value, OptionError)  # a weights problem: exit 1
    with pytest.raises(DenseclsError) as err:
        categories_for(weights=weights)  # `densecls classes` and class resolution too
    assert str(err.value) == expected


@pytest.mark.parametrize("model", ["efficientnet_lite0", "resnet18", "timm:resnet18"])
@pytest.mark.parametrize("weights", ["finetuned.safetensors", "model.PTH", "runs/best"])
def test_a_missing_file_is_named_by_every_source(model: str, weights: str) -> None:
    if model.startswith("timm:"):
        pytest.importorskip("timm")
    with pytest.raises(DenseclsError) as err:
        load_model(model, weights=weights)
    assert str(err.value) == f"--weights {weights}: no such file; check the path"


def test_the_embedded_weights_by_their_names() -> None:
    for name in ("DEFAULT", "default", " embedded "):
        assert categories_for(weights=name)[281] == "tabby"
    assert load_model(weights="DEFAULT").meta.weights.startswith("ImageNet")


def test_torchvision_refuses_an_unknown_weights_name() -> None:
    with pytest.raises(DenseclsError) as err:
        load_model("resnet18", weights="checkpoint")
    assert str(err.value) == (
        "--weights 'checkpoint': not a weights name of resnet18 nor an existing file; "
        "use DEFAULT, IMAGENET1K_V1 or the path of a local state_dict file"
    )


def test_empty_weights_is_a_bad_value() -> None:
    with pytest.raises(OptionError, match=r"^--weights '': empty; "):
        load_model(weights="  ")


def test_a_folder_is_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(DenseclsError, match=r"is a folder; pass the checkpoint file in it"):
        load_model(weights=str(tmp_path))


def test_what_reads_as_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").write_bytes(b"")
    assert as_path("x.safetensors") == Path("x.safetensors")
    assert as_path("X.CKPT") == Path("X.CKPT")
    assert as_path("dir/x") == Path("dir/x")
    assert as_path("mine") == Path("mine")  # exists, so a file
    assert as_path("IMAGENET1K_V1") is None and as_path("a1_in1k") is None
    assert as_path(None) is None


def test_cli_unknown_weights_exits_1_with_one_line(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["predict", str(SAMPLES / "coffee.png"), "--weights", "checkpoint", "-f", "json"]
    )
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert "--weights 'checkpoint': not a weights name of efficientnet_lite0" in result.stderr
    assert "Traceback" not in result.output


# --- safetensors ------------------------------------------------------------------------


def test_safetensors_checkpoint_loads(tmp_path: Path) -> None:
    save_file = pytest.importorskip("safetensors.torch").save_file
    torch.manual_seed(0)
    state = tvm.resnet18(num_classes=3).state_dict()
    named = tmp_path / "finetuned.safetensors"
    save_file({f"module.{k}": v.contiguous() for k, v in state.items()}, named)
    loaded = load_model("resnet18", weights=str(named))
    assert loaded.meta.categories == ("class_0", "class_1", "class_2")
    torch.testing.assert_close(loaded.module.fc.weight, state["fc.weight"])
    # Known by its header too, whatever the file is called.
    unnamed = tmp_path / "weights.pt"
    unnamed.write_bytes(named.read_bytes())
    assert load_model("resnet18", weights=str(unnamed)).module.fc.out_features == 3


def test_unreadable_safetensors_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_text("hello, this is no tensor file")
    with pytest.raises(DenseclsError) as err:
        load_model(weights=str(bad))
    message = str(err.value)
    assert message.startswith(f"--weights {bad}: not a readable safetensors file (")
    assert "\n" not in message


def test_safetensors_without_the_package_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "finetuned.safetensors"
    path.write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(DenseclsError) as err:
        load_model(weights=str(path))
    assert str(err.value) == (
        f"--weights {path}: reading .safetensors needs the safetensors package; "
        "pip install safetensors, or save the weights with torch.save(model.state_dict(), PATH)"
    )


# --- a checkpoint that does not fit: counted, keys whole, one line ------------------------


def test_missing_keys_are_counted_and_never_cut(tmp_path: Path) -> None:
    path = tmp_path / "r18.pth"
    _resnet18_checkpoint(path)
    # BatchNorm fills in a missing num_batches_tracked itself; torch does not count those.
    expected = {
        k
        for k in set(tvm.resnet34().state_dict()) - set(tvm.resnet18().state_dict())
        if not k.endswith("num_batches_tracked")
    }
    with pytest.raises(DenseclsError) as err:
        load_model("resnet34", weights=str(path))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        f"--weights {path}: does not fit the chosen --model, missing {len(expected)} keys ("
    )
    assert message.endswith("…); pass the architecture the checkpoint was trained with")
    shown = message.split(" keys (", 1)[1].split(")", 1)[0].split(", ")
    assert len(shown) == 4 and shown[-1] == "…"
    assert set(shown[:3]) <= expected  # whole key names, not cut mid-word


def test_unexpected_and_reshaped_keys(tmp_path: Path) -> None:
    path = tmp_path / "odd.pth"
    state = _resnet18_checkpoint(path)
    state["extra.weight"] = torch.zeros(1)
    state["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    torch.save(state, path)
    with pytest.raises(DenseclsError) as err:
        load_model("resnet18", weights=str(path))
    assert str(err.value) == (
        f"--weights {path}: does not fit the chosen --model, 1 unexpected key (extra.weight), "
        "1 key of another shape (conv1.weight is 64×3×5×5 in the file, 64×3×7×7 in the model); "
        "pass the architecture the checkpoint was trained with"
    )


def test_mismatch_summary_keeps_long_keys_whole() -> None:
    keys = [f"features.denseblock4.denselayer{i}.norm1.running_mean" for i in range(12)]
    exc = RuntimeError(
        "Error(s) in loading state_dict for DenseNet:\n\tMissing key(s) in state_dict: "
        + ", ".join(f'"{k}"' for k in keys)
        + ". "
    )
    assert mismatch_summary(exc) == f"missing 12 keys ({', '.join(keys[:3])}, …)"
    # A message torch words otherwise is kept, cut between words.
    other = RuntimeError("Error(s) in loading:\n\t" + "word " * 60)
    summary = mismatch_summary(other)
    assert summary.endswith("word…") and len(summary) <= 160


def test_short_reason_cuts_between_words() -> None:
    text = " ".join(["Missing"] + [f'"layer{i}.weight",' for i in range(40)])
    reason = short_reason(RuntimeError(text))
    assert len(reason) <= 160 and reason.endswith("…")
    assert text.startswith(reason[:-1])
    assert reason[:-1].split()[-1] in {w.rstrip(",") for w in text.split()}  # a whole word
    assert short_reason(OSError("short\n  one")) == "short one"


# --- stdout carries only results -----------------------------------------------------------


def test_cli_download_message_goes_to_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_download(url: str, dst: str, *args: object, **kwargs: object) -> None:
        print(f"fetching {url}")  # as torch.hub's progress would, on stdout
        torch.manual_seed(0)
        torch.save(tvm.resnet18().state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    result = runner.invoke(app, ["predict", str(SAMPLES / "coffee.png"), "-m", "resnet18",
                                 "--size", "keep", "-f", "json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)  # nothing but the JSON document
    assert 'Downloading: "https://download.pytorch.org/models/resnet18-' in result.stderr
    assert "fetching https://" in result.stderr
