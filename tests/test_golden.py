"""Every command's output on the sample images, against golden files made before issue #11's
architecture move: stdout, stderr, exit codes, JSON/CSV records, .npy and PNG files.

On the machine kind the goldens were made on (same torch, CPU capability and thread count)
every byte must match. Elsewhere float results may differ in their last bits, so numbers are
compared within a tolerance and pictures within a grey level; everything else still exactly.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from golden.cases import CASES, OUT, Case, digest, fingerprint, run_case
from PIL import Image

MANIFEST = json.loads((OUT / "manifest.json").read_text())
EXACT = MANIFEST["fingerprint"] == fingerprint()
_NUMBER = re.compile(r"-?\d+\.\d+(?:e-?\d+)?")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_output_matches_golden(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(OUT.parent.parent.parent)
    got = run_case(case, tmp_path)
    want = MANIFEST["cases"][case.name]
    assert sorted(got) == sorted(want), f"{case.name}: different outputs"
    for key, data in got.items():
        if digest(data) == want[key]:
            continue
        golden = (OUT / case.name / key).read_bytes()
        assert not EXACT, f"{case.name}/{key}: differs from the golden output"
        _assert_close(key, data, golden)


def _assert_close(key: str, data: bytes, golden: bytes) -> None:
    """Off the goldens' machine kind: same structure, numbers within float noise."""
    if key.endswith(".npy"):
        a, b = np.load(io.BytesIO(data)), np.load(io.BytesIO(golden))
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, atol=1e-3, rtol=1e-3)
    elif key.endswith(".png"):
        a, b = (np.asarray(Image.open(io.BytesIO(x)), dtype=np.int16) for x in (data, golden))
        assert a.shape == b.shape
        assert np.abs(a - b).mean() < 0.5, key
    else:
        text, ref = data.decode(), golden.decode()
        assert _NUMBER.sub("#", text) == _NUMBER.sub("#", ref) or _mostly_same(text, ref), key
        nums = np.array([float(x) for x in _NUMBER.findall(text)])
        refs = np.array([float(x) for x in _NUMBER.findall(ref)])
        if nums.shape == refs.shape:
            np.testing.assert_allclose(nums, refs, atol=2e-3, rtol=1e-3)


def _mostly_same(text: str, ref: str) -> bool:
    """Near-ties may swap a label or two; at most 2% of the lines may differ."""
    a, b = text.splitlines(), ref.splitlines()
    return len(a) == len(b) and sum(x != y for x, y in zip(a, b, strict=True)) <= 0.02 * len(a)
