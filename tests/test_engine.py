"""The engine (densecls.engine): uint8 inputs to float32 logits on the model's device,
with autocast, torch.compile and its cache folder; and how DenseClassifier uses it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import SAMPLES
from helpers import patch_vgg
from torch import nn
from typer.testing import CliRunner

from densecls.cli.app import app
from densecls.commands import ModelOptions
from densecls.convert import DenseModel, convert
from densecls.engine import Engine, cxx_compiler, inductor_cache_dir
from densecls.errors import OptionError
from densecls.infer import DenseClassifier
from densecls.meta import LoadedModel

CPU = torch.device("cpu")


def _inputs(n: int = 2, h: int = 96, w: int = 128) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=gen)


def test_engine_normalises_and_runs_the_model() -> None:
    loaded = patch_vgg()
    model = convert(loaded).model
    engine = Engine(model, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), device=CPU)
    x = _inputs()
    mean = torch.tensor((0.4, 0.5, 0.6)).view(1, 3, 1, 1)
    std = torch.tensor((0.2, 0.25, 0.3)).view(1, 3, 1, 1)
    with torch.inference_mode():
        ref = model((x.float() / 255 - mean) / std)
    out = engine(x)
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    assert out.shape == (2, 10, 2, 3)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert engine.module is model and engine.take_notes() == ()


def test_half_autocasts_to_bfloat16_on_cpu_and_returns_float32() -> None:
    model = convert(patch_vgg()).model
    full = Engine(model, mean=(0.5,) * 3, std=(0.5,) * 3, device=CPU)
    half = Engine(model, mean=(0.5,) * 3, std=(0.5,) * 3, device=CPU, half=True)
    x = _inputs()
    ref, got = full(x), half(x)
    assert got.dtype == torch.float32
    assert not torch.equal(got, ref)  # it did run in bfloat16
    assert float((got - ref).abs().max() / ref.abs().max()) < 0.05


def test_cache_folder_is_the_users_unless_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert inductor_cache_dir() == tmp_path / "xdg" / "densecls" / "inductor"
    # Importing torchvision sets inductor's own default: that is not the user's choice.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", os.path.abspath(default_cache_dir()))
    assert inductor_cache_dir() == tmp_path / "xdg" / "densecls" / "inductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert inductor_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert inductor_cache_dir() == tmp_path / "home" / ".cache" / "densecls" / "inductor"


def test_compile_without_a_cxx_compiler_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CXX", raising=False)
    assert cxx_compiler() is None
    with pytest.raises(OptionError, match=r"^--compile: no C\+\+ compiler found.*; install"):
        Engine(nn.Identity(), mean=(0.5,) * 3, std=(0.5,) * 3, device=CPU, compile=True)


@pytest.mark.skipif(cxx_compiler() is None, reason="inductor needs a C++ compiler on CPU")
def test_compiled_engine_matches_eager_and_reports_its_compile(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The smallest dense model inductor compiles: two convolutions and a ReLU (kept tiny so
    # that the compile takes seconds; the vector-ISA probes are skipped for the same reason).
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    monkeypatch.setattr(torch._inductor.config.cpp, "vec_isa_ok", False)
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = DenseModel(
        nn.Sequential(nn.Conv2d(3, 4, 8, 8), nn.ReLU()), nn.Sequential(nn.Conv2d(4, 5, 1))
    )
    model = model.eval()
    eager = Engine(model, mean=(0.5,) * 3, std=(0.5,) * 3, device=CPU)
    compiled = Engine(model, mean=(0.5,) * 3, std=(0.5,) * 3, device=CPU, compile=True)
    x = _inputs(1, 64, 80)
    torch.testing.assert_close(compiled(x), eager(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(compiled(x), eager(x), rtol=1e-5, atol=1e-5)
    assert [(c.input_size, c.batch) for c in compiled.compile_costs] == [((64, 80), 1)]
    notes = compiled.take_notes()
    assert len(notes) == 1 and notes[0].startswith("--compile: the first pass at 80×64 took ")
    assert str(tmp_path / "inductor") in notes[0]
    assert compiled.take_notes() == ()  # each compile is reported once
    assert any((tmp_path / "inductor").iterdir())  # the compiled graph is cached on disk
    torch._dynamo.reset()


def test_classifier_runs_the_fused_model_by_default(lite0: LoadedModel) -> None:
    fused = DenseClassifier(lite0, size=256)
    plain = DenseClassifier(lite0, size=256, fuse=False)
    assert fused.batch_size == 1 and plain.batch_size == 1  # CPU: batch 1 measured fastest
    assert fused.fused is not None and fused.fused.folded == 49
    assert plain.fused is None and plain.model is plain.conversion.model
    # The fused model runs and answers the grids: the unfused one is not kept.
    assert fused.conversion.model is fused.fused.model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.conversion.model.modules())
    a = fused.predict(SAMPLES / "coffee.png")
    b = plain.predict(SAMPLES / "coffee.png")
    assert float((a.logits - b.logits).abs().max() / b.logits.abs().max()) <= 1e-4
    assert a.grid == b.grid and a.notes == b.notes


def test_model_options_and_cli_spell_fuse_compile_and_batch_size() -> None:
    assert ModelOptions().batch_size is None and ModelOptions().fuse is True
    assert ModelOptions().compile is False
    out = CliRunner().invoke(app, ["predict", "--help"]).stdout
    assert "--no-fuse" in out and "--compile" in out and "--batch-size" in out


def test_malloc_keeps_freed_memory_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes
    import platform

    from densecls import engine

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    calls: list[tuple[int, int]] = []

    class Libc:
        def mallopt(self, param: int, value: int) -> int:
            calls.append((param, value))
            return 1

    monkeypatch.setattr(engine, "_MALLOC_TUNED", False)
    monkeypatch.setattr(ctypes, "CDLL", lambda name: Libc())
    monkeypatch.delenv("DENSECLS_MALLOC", raising=False)
    assert engine.keep_freed_memory() and engine.keep_freed_memory()
    # Once per process: mmap threshold at glibc's maximum, trim past 1 GiB, 64 MiB top pad.
    assert calls == [(-3, 32 << 20), (-1, 1 << 30), (-2, 64 << 20)]
    monkeypatch.setattr(engine, "_MALLOC_TUNED", False)
    monkeypatch.setenv("DENSECLS_MALLOC", "default")
    assert not engine.keep_freed_memory() and len(calls) == 3
