"""Tests for densecls.io.shard: --shard K/N."""

from __future__ import annotations

import zlib
from pathlib import Path, PurePosixPath

import pytest
from io_helpers import error_of

from densecls.io import InputItem, InputProblem, parse_shard, shard


def _items(n: int) -> list[InputItem | InputProblem]:
    items: list[InputItem | InputProblem] = [
        InputItem(Path(f"d/{i}.png"), f"d/{i}.png", PurePosixPath(f"{i}.png")) for i in range(n)
    ]
    items += [
        InputProblem(f"missing{i}", f"missing{i}: no such file; check the path") for i in (1, 2)
    ]
    return items


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_partition_the_inputs(count: int) -> None:
    items = _items(50)
    shares = [list(shard(items, k, count)) for k in range(1, count + 1)]
    assert sorted((item for share in shares for item in share), key=repr) == sorted(items, key=repr)
    assert sum(len(share) for share in shares) == len(items)  # pairwise disjoint
    if count > 1:
        assert all(len(share) < len(items) for share in shares)


def test_shards_are_stable_under_reordering_and_other_lists() -> None:
    items = _items(40)
    reordered = items[::-1]
    subset = items[5:20]
    for k in range(1, 5):
        mine = {item.display for item in shard(items, k, 4)}
        assert {item.display for item in shard(reordered, k, 4)} == mine
        assert {item.display for item in shard(subset, k, 4)} == mine & {i.display for i in subset}


def test_shard_spelling_of_the_same_path_does_not_matter() -> None:
    a = InputItem(Path("d/a.png"), "d/a.png", PurePosixPath("a.png"))
    b = InputItem(Path("d/a.png"), "./d/a.png", PurePosixPath("a.png"))
    for k in range(1, 6):
        assert len(list(shard([a], k, 5))) == len(list(shard([b], k, 5)))


def test_shard_uses_crc32_of_the_path() -> None:
    item = InputItem(Path("cat.jpg"), "cat.jpg", PurePosixPath("cat.jpg"))
    expected = zlib.crc32(b"cat.jpg") % 3 + 1
    assert [k for k in (1, 2, 3) if list(shard([item], k, 3))] == [expected]


def test_shard_is_lazy() -> None:
    def endless():
        i = 0
        while True:
            yield InputItem(Path(f"{i}.png"), f"{i}.png", PurePosixPath(f"{i}.png"))
            i += 1

    share = shard(endless(), 1, 2)
    assert len([next(share) for _ in range(5)]) == 5


def test_shard_rejects_bad_index() -> None:
    assert error_of(lambda: list(shard([], 0, 4))).startswith("--shard '0/4'")


@pytest.mark.parametrize(
    ("text", "expected"), [("1/4", (1, 4)), (" 4/4 ", (4, 4)), ("1/1", (1, 1))]
)
def test_parse_shard(text: str, expected: tuple[int, int]) -> None:
    assert parse_shard(text) == expected


def test_parse_shard_k_out_of_range_message() -> None:
    message = error_of(parse_shard, "0/4")
    assert message == "--shard '0/4': K must be between 1 and N; e.g. --shard 1/4"
    assert "K must be between 1 and N" in error_of(parse_shard, "5/4")


@pytest.mark.parametrize("text", ["", "3", "a/b", "1/", "/4", "1/4/2", "1.5/4", "1/0", "-1/-2"])
def test_parse_shard_rejects_malformed(text: str) -> None:
    message = error_of(parse_shard, text)
    assert message.startswith(f"--shard {text!r}: ")
    assert message.endswith("e.g. --shard 1/4")
