"""Tests for densecls.classes: --class resolution and the shipped WordNet data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

import densecls.classes
from densecls.classes import ClassSelection, imagenet_categories, resolve_class, search_classes
from densecls.errors import DenseclsError

DOGS = tuple(range(151, 269))
DOMESTIC_CATS = (281, 282, 283, 284, 285)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
CUSTOM = ["red car", "blue car", "cat"]


@pytest.fixture(scope="module")
def imagenet() -> tuple[str, ...]:
    return imagenet_categories()


@pytest.fixture(scope="module")
def legacy(imagenet: tuple[str, ...]) -> list[str]:
    """Older torchvision names: "crane" twice (bird, machine) and "maillot" twice."""
    names = list(imagenet)
    names[134], names[639] = "crane", "maillot"
    return names


def test_imagenet_categories(imagenet: tuple[str, ...]) -> None:
    assert len(imagenet) == 1000
    assert imagenet[0] == "tench"
    assert imagenet[281] == "tabby"
    assert imagenet[948] == "Granny Smith"
    assert imagenet[999] == "toilet tissue"


def test_data_file_provenance_and_shape() -> None:
    path = resources.files("densecls").joinpath("data/imagenet_wordnet.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    provenance = data["provenance"]
    assert "WordNet 3.0" in provenance["wordnet"]["source"]
    assert "wordnet-base" in provenance["wordnet"]["source"]
    assert "Princeton" in provenance["wordnet"]["notice"]
    assert "imagenet_synsets.txt" in provenance["wnids"]["source"]
    assert "torchvision" in provenance["categories"]["source"]
    assert provenance["made_by"] == "scripts/build_imagenet_hierarchy.py"
    assert data["wnids"][0] == "n01440764"
    assert data["wnids"] == sorted(data["wnids"])
    lemmas, gloss, indices = data["groups"]["n02121620"]  # cat.n.01
    assert lemmas == ["cat", "true cat"]
    assert gloss.startswith("feline mammal")
    assert indices == [281, 282, 283, 284, 285, 286, 287]
    assert len(path.read_bytes()) < 1_000_000


def test_import_does_not_pull_torch() -> None:
    code = "import sys, densecls.classes; print('torch' in sys.modules)"
    src = str(Path(densecls.classes.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "False"


def test_index(imagenet: tuple[str, ...]) -> None:
    sel = resolve_class("281", imagenet)
    assert sel == ClassSelection("281", "tabby", "tabby", (281,), "index", None)


@pytest.mark.parametrize("query", ["1000", "-1", "12345"])
def test_index_out_of_range(query: str, imagenet: tuple[str, ...]) -> None:
    with pytest.raises(DenseclsError, match=r"^--class '.*': index out of range; use 0 to 999$"):
        resolve_class(query, imagenet)


@pytest.mark.parametrize("query", ["", "   "])
def test_empty_query(query: str, imagenet: tuple[str, ...]) -> None:
    with pytest.raises(DenseclsError, match=r"^--class: empty;"):
        resolve_class(query, imagenet)


@pytest.mark.parametrize(
    ("query", "index", "name"),
    [
        ("tabby", 281, "tabby"),
        ("Tiger Cat", 282, "tiger_cat"),
        ("tiger_cat", 282, "tiger_cat"),
        ("granny smith", 948, "granny_smith"),
        ("jack-o'-lantern", 607, "jack-o-lantern"),
        ("crane bird", 134, "crane_bird"),
    ],
)
def test_exact_name(query: str, index: int, name: str, imagenet: tuple[str, ...]) -> None:
    sel = resolve_class(query, imagenet)
    assert (sel.indices, sel.kind, sel.name, sel.label) == ((index,), "name", name, imagenet[index])


def test_exact_name_notes_other_wordnet_meaning(imagenet: tuple[str, ...]) -> None:
    sel = resolve_class("crane", imagenet)
    assert sel.indices == (517,)
    assert sel.note is not None
    assert "crane bird (134)" in sel.note


def test_duplicate_names_select_all(legacy: list[str]) -> None:
    sel = resolve_class("crane", legacy)
    assert sel.indices == (134, 517)
    assert sel.kind == "name"
    assert sel.label == "crane (2 classes)"
    assert sel.note is not None
    assert "134, 517" in sel.note
    assert resolve_class("Maillot", legacy).indices == (638, 639)
    # An index into a duplicated name keeps file names apart.
    assert resolve_class("134", legacy).name == "crane_134"


def test_names_differing_only_in_case(imagenet: tuple[str, ...]) -> None:
    assert imagenet[264] == "Cardigan"
    assert imagenet[474] == "cardigan"
    assert resolve_class("Cardigan", imagenet).indices == (264,)
    assert resolve_class("cardigan", imagenet).indices == (474,)
    assert resolve_class("CARDIGAN", imagenet).indices == (264, 474)


def test_dog_group(imagenet: tuple[str, ...]) -> None:
    sel = resolve_class("dog", imagenet)
    assert sel.kind == "group"
    assert sel.indices == DOGS
    assert len(sel.indices) == 118
    assert sel.name == "dog"
    assert sel.label == "dog (WordNet group, 118 classes)"
    assert sel.note is not None
    assert "dog.n.01" in sel.note


def test_cat_group_is_cat_n_01(imagenet: tuple[str, ...]) -> None:
    sel = resolve_class("cat", imagenet)
    assert sel.kind == "group"
    assert set(DOMESTIC_CATS) <= set(sel.indices)
    assert {291, 292}.isdisjoint(sel.indices)  # lion, tiger: big_cat.n.01
    assert 484 not in sel.indices  # catamaran
    assert sel.note is not None
    assert "cat.n.01" in sel.note
    assert "feline mammal" in sel.note
    assert "7 other noun senses" in sel.note
    assert "big_cat.n.01" in sel.note


def test_legacy_names_are_still_imagenet(legacy: list[str]) -> None:
    assert resolve_class("dog", legacy).indices == DOGS


@pytest.mark.parametrize(
    ("query", "sense", "count", "members"),
    [
        ("bird", "bird.n.01", 59, {7, 8, 134}),  # cock, hen, crane bird
        ("vehicle", "vehicle.n.01", 67, {407, 436, 511, 717}),  # ambulance, ..., pickup
        ("fruit", "fruit.n.01", 16, {948, 950, 954}),  # Granny Smith, orange, banana
        ("musical instrument", "musical_instrument.n.01", 26, {401, 402, 889}),  # ..., violin
        ("musical_instrument", "musical_instrument.n.01", 26, {401, 402, 889}),
        ("Shark", "shark.n.01", 3, {2, 3, 4}),
    ],
)
def test_groups(
    query: str, sense: str, count: int, members: set[int], imagenet: tuple[str, ...]
) -> None:
    sel = resolve_class(query, imagenet)
    assert sel.kind == "group"
    assert len(sel.indices) == count
    assert members <= set(sel.indices)
    assert list(sel.indices) == sorted(set(sel.indices))
    assert sel.note is not None
    assert sense in sel.note
    assert sel.name == "_".join(query.lower().replace("_", " ").split())


def test_group_from_plural(imagenet: tuple[str, ...]) -> None:
    sel = resolve_class("dogs", imagenet)
    assert sel.indices == DOGS
    assert sel.note is not None
    assert sel.note.startswith("read 'dogs' as 'dog'")


def test_group_from_synonym_lemma(imagenet: tuple[str, ...]) -> None:
    assert resolve_class("coach dog", imagenet).indices == (imagenet.index("dalmatian"),)


def test_custom_labels_whole_word() -> None:
    car = resolve_class("car", CUSTOM)
    assert (car.indices, car.kind, car.name) == ((0, 1), "word", "car")
    assert resolve_class("CAT", CUSTOM).indices == (2,)
    assert resolve_class("red", CUSTOM) == ClassSelection(
        "red", "red_car", "red car", (0,), "word", "the only category with the word 'red'"
    )
    with pytest.raises(DenseclsError, match="no category of that name"):
        resolve_class("ca", CUSTOM)
    # No WordNet groups outside ImageNet-1k.
    with pytest.raises(DenseclsError):
        resolve_class("vehicle", CUSTOM)


def test_word_fallback_never_matches_inside_a_word() -> None:
    labels = ["catamaran", "wildcat", "cat food", "big-cat"]
    assert resolve_class("cat", labels).indices == (2, 3)


def test_unknown_suggests(imagenet: tuple[str, ...]) -> None:
    with pytest.raises(DenseclsError) as info:
        resolve_class("catt", imagenet)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("--class 'catt': no category or WordNet group of that name; ")
    assert "did you mean" in message
    assert "'cat'" in message


def test_unknown_without_suggestions(imagenet: tuple[str, ...]) -> None:
    with pytest.raises(DenseclsError, match=r"`densecls classes` lists the categories$"):
        resolve_class("zzzqqq", imagenet)


def test_search_all(imagenet: tuple[str, ...]) -> None:
    assert search_classes(None, imagenet) == list(enumerate(imagenet))
    assert search_classes("  ", CUSTOM) == list(enumerate(CUSTOM))


def test_search_word_prefix_and_group(imagenet: tuple[str, ...]) -> None:
    found = search_classes("cat", imagenet)
    assert (281, "tabby") in found  # WordNet group member
    assert (282, "tiger cat") in found  # whole word
    assert (484, "catamaran") in found  # prefix of a word
    assert (291, "lion") not in found
    assert found == sorted(found)
    assert (281, "tabby") in search_classes("tab", imagenet)
    assert (948, "Granny Smith") in search_classes("smi", imagenet)
    assert search_classes("281", imagenet) == [(281, "tabby")]


def test_search_custom_labels() -> None:
    assert search_classes("car", CUSTOM) == [(0, "red car"), (1, "blue car")]
    assert search_classes("bl", CUSTOM) == [(1, "blue car")]
    assert search_classes("dog", CUSTOM) == []
