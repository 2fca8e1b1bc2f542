"""Resolve ``--class``: an index, a category name, a WordNet group (ImageNet-1k) or a word."""

from __future__ import annotations

import difflib
import functools
import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from densecls.errors import DenseclsError

__all__ = ["ClassKind", "ClassSelection", "imagenet_categories", "resolve_class", "search_classes"]

ClassKind = Literal["index", "name", "group", "word"]

_DATA_FILE = "data/imagenet_wordnet.json"
_MAX_SUGGESTIONS = 5
_MAX_LISTED = 5
# Noun suffixes WordNet's morphy strips to find a base form ("dogs" -> "dog", "boxes" -> "box").
_PLURAL_SUFFIXES = (
    ("ies", "y"),
    ("ches", "ch"),
    ("shes", "sh"),
    ("xes", "x"),
    ("zes", "z"),
    ("ses", "s"),
    ("men", "man"),
    ("s", ""),
)


@dataclass(frozen=True)
class ClassSelection:
    """What ``--class`` selected: the class indices whose probabilities are summed."""

    query: str  # as the user typed it
    name: str  # file-name safe: ASCII letters, digits, '-', '_'
    label: str  # for people, e.g. "cat (WordNet group, 7 classes)"
    indices: tuple[int, ...]  # sorted, at least one
    kind: ClassKind
    note: str | None  # e.g. the WordNet sense used and what else the word means


@dataclass(frozen=True)
class _Group:
    """One WordNet noun synset with the ImageNet-1k classes beneath it."""

    wnid: str
    lemmas: tuple[str, ...]
    gloss: str
    indices: tuple[int, ...]


@dataclass(frozen=True)
class _Sense:
    """One noun sense of a lemma that holds ImageNet-1k classes."""

    number: int
    group: _Group


@dataclass(frozen=True)
class _Hierarchy:
    """The shipped ImageNet-1k/WordNet data, indexed for lookup."""

    categories: tuple[str, ...]
    class_lemmas: tuple[frozenset[str], ...]
    senses: dict[str, tuple[int, tuple[_Sense, ...]]]

    def sense_name(self, group: _Group) -> str:
        """NLTK-style synset name, e.g. ``cat.n.01``."""
        first = _key(group.lemmas[0])
        number = next(s.number for s in self.senses[first][1] if s.group is group)
        return f"{first.replace(' ', '_')}.n.{number:02d}"


@dataclass(frozen=True)
class _GroupMatch:
    """The sense chosen for a word, and what else the word could mean."""

    word: str
    sense: _Sense
    total_senses: int
    others: tuple[_Sense, ...]


def _key(text: str) -> str:
    """Comparison form: underscores as spaces, single spaces, case-folded."""
    return " ".join(text.replace("_", " ").split()).casefold()


def _slug(text: str) -> str:
    """File-name-safe form: ASCII letters, digits, '-' and '_' only, lowercase."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^A-Za-z0-9_-]+", "_", ascii_text.replace("'", "")).strip("_-").lower()


def _word_pattern(key: str) -> re.Pattern[str]:
    """Whole-word match of ``key`` inside a keyed category name."""
    return re.compile(rf"(?<![^\W_]){re.escape(key)}(?![^\W_])")


@functools.cache
def _hierarchy() -> _Hierarchy:
    """Load the shipped data file once."""
    path = resources.files("densecls").joinpath(_DATA_FILE)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        groups = {
            wnid: _Group(wnid, tuple(lemmas), gloss, tuple(indices))
            for wnid, (lemmas, gloss, indices) in data["groups"].items()
        }
        categories = tuple(data["categories"])
        class_lemmas = tuple(
            frozenset(_key(lemma) for lemma in groups[wnid].lemmas) for wnid in data["wnids"]
        )
        senses = {
            lemma: (total, tuple(_Sense(number, groups[wnid]) for number, wnid in kept))
            for lemma, (total, *kept) in data["senses"].items()
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DenseclsError(
            f"densecls/{_DATA_FILE}: cannot read the ImageNet class data ({exc}); "
            "reinstall densecls"
        ) from exc
    return _Hierarchy(categories, class_lemmas, senses)


def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet-1k display names (torchvision's), in index order."""
    return _hierarchy().categories


@functools.lru_cache(maxsize=8)
def _is_imagenet(categories: tuple[str, ...]) -> bool:
    """Whether ``categories`` names the ImageNet-1k classes in index order.

    Older torchvision releases say "crane" and "maillot" where newer ones say "crane bird" and
    "maillot tank suit"; any WordNet lemma of the class at that index is accepted.
    """
    if len(categories) != 1000:
        return False
    hierarchy = _hierarchy()
    return all(
        _key(name) == _key(display) or _key(name) in lemmas
        for name, display, lemmas in zip(
            categories, hierarchy.categories, hierarchy.class_lemmas, strict=True
        )
    )


@functools.lru_cache(maxsize=8)
def _names_index(categories: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """Keyed category name -> every index carrying that name."""
    index: dict[str, list[int]] = {}
    for i, name in enumerate(categories):
        index.setdefault(_key(name), []).append(i)
    return {name: tuple(indices) for name, indices in index.items()}


def _choose_sense(word: str) -> _GroupMatch | None:
    """The sense of a WordNet word to use: sense 1 if it holds classes, else the largest."""
    entry = _hierarchy().senses.get(word)
    if entry is None:
        return None
    total, senses = entry
    chosen = senses[0]  # senses are in WordNet order, most frequent first
    if chosen.number != 1:
        chosen = max(senses, key=lambda s: (len(s.group.indices), -s.number))
    others = tuple(s for s in senses if s is not chosen)
    return _GroupMatch(word, chosen, total, others)


def _base_forms(word: str) -> list[str]:
    """Singular candidates for a plural noun, in morphy's order."""
    return [
        word[: -len(suffix)] + ending
        for suffix, ending in _PLURAL_SUFFIXES
        if word.endswith(suffix) and len(word) > len(suffix) + 1
    ]


def _group_note(match: _GroupMatch, query: str) -> str:
    """Which sense was used and what else the word means."""
    hierarchy = _hierarchy()
    group = match.sense.group
    note = f"WordNet sense {hierarchy.sense_name(group)} ({group.gloss})"
    if _key(query) != match.word:
        note = f"read {query!r} as {match.word!r}; " + note
    other_count = match.total_senses - 1
    if other_count == 0:
        return note + f"; the only noun sense of {match.word!r}"
    plural = "s" if other_count != 1 else ""
    note += f"; {match.word!r} has {other_count} other noun sense{plural}"
    if match.others:
        names = ", ".join(
            f"{hierarchy.sense_name(s.group)} ({len(s.group.indices)})" for s in match.others
        )
        note += f", with ImageNet classes: {names}"
    return note


def _also_means(word: str, named: tuple[int, ...], categories: Sequence[str]) -> str | None:
    """For an exact ImageNet name, the other classes its word names in WordNet ("crane" bird)."""
    entry = _hierarchy().senses.get(word)
    if entry is None:
        return None
    others = sorted({i for s in entry[1] for i in s.group.indices} - set(named))
    if not others:
        return None
    listed = ", ".join(f"{categories[i]} ({i})" for i in others[:_MAX_LISTED])
    more = f" and {len(others) - _MAX_LISTED} more" if len(others) > _MAX_LISTED else ""
    return f"{word!r} is also WordNet's word for {listed}{more}; give a name or index for those"


def _count(n: int) -> str:
    return f"{n} class" if n == 1 else f"{n} classes"


def _listing(indices: Sequence[int], categories: Sequence[str]) -> str:
    """A few category names, then how many more."""
    names = ", ".join(categories[i] for i in indices[:_MAX_LISTED])
    extra = len(indices) - _MAX_LISTED
    return names + (f" and {extra} more" if extra > 0 else "")


def _word_matches(key: str, categories: tuple[str, ...]) -> tuple[int, ...]:
    """Indices of categories containing ``key`` as a whole word."""
    pattern = _word_pattern(key)
    return tuple(i for i, name in enumerate(categories) if pattern.search(_key(name)))


def _group_selection(query: str, match: _GroupMatch) -> ClassSelection:
    indices = match.sense.group.indices
    return ClassSelection(
        query=query,
        name=_slug(query) or "group",
        label=f"{query.strip()} (WordNet group, {_count(len(indices))})",
        indices=indices,
        kind="group",
        note=_group_note(match, query),
    )


def _suggestions(key: str, categories: tuple[str, ...], imagenet: bool) -> list[str]:
    """Close category names and (ImageNet only) WordNet words."""
    candidates = {_key(name): name for name in categories}
    if imagenet:
        for word in _hierarchy().senses:
            candidates.setdefault(word, word)
    close = difflib.get_close_matches(key, list(candidates), n=_MAX_SUGGESTIONS)
    return [candidates[c] for c in close]


def resolve_class(query: str, categories: Sequence[str]) -> ClassSelection:
    """Resolve ``--class QUERY`` against a model's categories.

    Tries, in order: an index; an exact category name (case-insensitive); for ImageNet-1k, a
    WordNet word naming a group of classes; a whole word inside category names.

    Raises:
        DenseclsError: the query is empty, the index out of range, or nothing matches.
    """
    text = query.strip()
    cats = tuple(categories)
    if not text:
        raise DenseclsError(
            "--class: empty; give a class index, a category name or a word "
            "(`densecls classes` lists them)"
        )
    if not cats:
        raise DenseclsError(f"--class {query!r}: the model has no categories; check its labels")
    if re.fullmatch(r"[+-]?\d+", text):
        return _index_selection(query, int(text), cats)
    key = _key(text)

    imagenet = _is_imagenet(cats)
    named = _names_index(cats).get(key)
    if named:
        cased = tuple(i for i in named if cats[i].strip() == text)
        if len(named) > 1 and len(cased) == 1:
            # "Cardigan" (the corgi) and "cardigan" (the sweater) differ only in case.
            others = ", ".join(f"{cats[i]!r} ({i})" for i in named if i not in cased)
            note = f"chose the exact-case match; also {others}, give its index to pick it"
            slug = _index_slug(cased[0], cats)
            return ClassSelection(query, slug, cats[cased[0]], cased, "name", note)
        name = cats[named[0]]
        if len(named) == 1:
            note = _also_means(key, named, cats) if imagenet else None
            return ClassSelection(query, _slug(name) or str(named[0]), name, named, "name", note)
        where = ", ".join(map(str, named))
        return ClassSelection(
            query=query,
            name=_slug(name) or "class",
            label=f"{name} ({_count(len(named))})",
            indices=named,
            kind="name",
            note=f"{len(named)} categories are named {name!r} (indices {where}); all are summed, "
            "give an index to pick one",
        )

    match = _choose_sense(key) if imagenet else None
    if match is not None:
        return _group_selection(query, match)

    words = _word_matches(key, cats)
    if len(words) == 1:
        name = cats[words[0]]
        note = f"the only category with the word {text!r}"
        return ClassSelection(query, _slug(name) or str(words[0]), name, words, "word", note)
    if words:
        return ClassSelection(
            query=query,
            name=_slug(text) or "class",
            label=f"{text} ({_count(len(words))} named with the word)",
            indices=words,
            kind="word",
            note=f"categories with the word {text!r}: {_listing(words, cats)}",
        )

    if imagenet:
        for base in _base_forms(key):
            match = _choose_sense(base)
            if match is not None:
                return _group_selection(query, match)

    what = "category or WordNet group" if imagenet else "category"
    suggestions = _suggestions(key, cats, imagenet)
    hint = (
        f"did you mean {', '.join(map(repr, suggestions))}?"
        if suggestions
        else "`densecls classes` lists the categories"
    )
    raise DenseclsError(f"--class {query!r}: no {what} of that name; {hint}")


def _index_selection(query: str, index: int, categories: tuple[str, ...]) -> ClassSelection:
    if not 0 <= index < len(categories):
        raise DenseclsError(
            f"--class {query!r}: index out of range; use 0 to {len(categories) - 1}"
        )
    return ClassSelection(
        query, _index_slug(index, categories), categories[index], (index,), "index", None
    )


def _index_slug(index: int, categories: tuple[str, ...]) -> str:
    """File-name-safe name of one class; names shared by several classes get the index too."""
    name = categories[index]
    slug = _slug(name) or str(index)
    if len(_names_index(categories)[_key(name)]) > 1:
        slug = f"{slug}_{index}"  # duplicated names must not share an output file name
    return slug


def search_classes(query: str | None, categories: Sequence[str]) -> list[tuple[int, str]]:
    """Categories for ``densecls classes [QUERY]``, as ``(index, name)`` in index order.

    All of them when ``query`` is None or blank; else those containing it as a whole word,
    those with a name or word starting with it, the index it names, and (ImageNet-1k only) the
    members of the WordNet group it names.
    """
    cats = tuple(categories)
    if query is None or not query.strip():
        return list(enumerate(cats))
    key = _key(query)
    found = set(_word_matches(key, cats))
    for i, name in enumerate(cats):
        name_key = _key(name)
        words = re.split(r"[\W_]+", name_key)
        if name_key.startswith(key) or any(word.startswith(key) for word in words):
            found.add(i)
    if re.fullmatch(r"\d+", key) and int(key) < len(cats):
        found.add(int(key))
    if _is_imagenet(cats):
        match = _choose_sense(key) or next(
            filter(None, (_choose_sense(base) for base in _base_forms(key))), None
        )
        if match is not None:
            found.update(match.sense.group.indices)
    return [(i, cats[i]) for i in sorted(found)]
