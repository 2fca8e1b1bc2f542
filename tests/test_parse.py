"""Option parsers shared by the CLI and the Python API: one grammar per option."""

from __future__ import annotations

import pytest

from densecls.errors import DenseclsError
from densecls.parse import format_bytes, format_pair, parse_bytes, parse_scales, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [("448", 448), (" keep ", None), ("480x640", (480, 640)), ("480×640", (480, 640)),
     ("384X384", (384, 384)), (512, 512), ((3, 4), (3, 4)), (None, None)],
)  # fmt: skip
def test_one_size_grammar(text: object, expected: object) -> None:
    assert parse_size(text) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["big", "0", "0x5", "3x", "-4", "1x2x3", 0, (0, 4)])
def test_bad_sizes_name_the_option(text: object) -> None:
    with pytest.raises(DenseclsError, match=r"^--size .*(not a size|must be positive)"):
        parse_size(text)  # type: ignore[arg-type]


def test_bytes_and_scales() -> None:
    assert parse_bytes("4GB") == 4_000_000_000 and parse_bytes("2GiB") == 2 << 30
    assert parse_bytes("512mb") == 512_000_000 and parse_bytes("1000") == 1000
    for bad in ("lots", "-1GB", "0"):
        with pytest.raises(DenseclsError, match="--max-memory"):
            parse_bytes(bad)
    assert parse_scales("1,1.5, 2") == (1.0, 1.5, 2.0)
    with pytest.raises(DenseclsError, match="--scales 'a,b'"):
        parse_scales("a,b")


def test_formats_for_people() -> None:
    assert format_bytes(999) == "999 B" and format_bytes(1.5e9) == "1.5 GB"
    assert format_pair((32.0, 32.0)) == "32" and format_pair((21.43, 21.44)) == "21.4"
    assert format_pair((10.7, 10.72)) == "10.7" and format_pair((150.0, 150.11)) == "150×150.1"
