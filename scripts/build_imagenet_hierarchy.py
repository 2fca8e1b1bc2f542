"""Build ``src/densecls/data/imagenet_wordnet.json``: ImageNet-1k names, wnids and WordNet groups.

Development time only; the package never imports this script and needs neither WordNet nor timm.

Inputs:
  * WordNet 3.0 noun files from Debian's ``wordnet-base`` (``apt-get install wordnet-base``);
  * the 1000 ImageNet-1k wnids in index order, ``timm/data/_info/imagenet_synsets.txt`` read
    straight from timm's wheel (``pip download --no-deps -d /tmp/timmwheel timm``);
  * the display names from torchvision's ``ResNet50_Weights.IMAGENET1K_V1.meta["categories"]``.

Usage::

    .venv/bin/python scripts/build_imagenet_hierarchy.py \
        --timm-wheel /tmp/timmwheel/timm-1.0.31-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "src" / "densecls" / "data" / "imagenet_wordnet.json"
DEFAULT_WORDNET = Path("/usr/share/wordnet")
TIMM_SYNSETS = "timm/data/_info/imagenet_synsets.txt"
GLOSS_CHARS = 80
# Pointers followed upwards: hypernym and instance hypernym.
UP_POINTERS = frozenset({"@", "@i"})
# The WordNet 3.0 licence asks that its notice and disclaimer travel with every copy.
WORDNET_LICENSE = (
    "WordNet Release 3.0. This software and database is being provided to you, the LICENSEE, by "
    "Princeton University under the following license. By obtaining, using and/or copying this "
    "software and database, you agree that you have read, understood, and will comply with these "
    "terms and conditions.: Permission to use, copy, modify and distribute this software and "
    "database and its documentation for any purpose and without fee or royalty is hereby "
    "granted, provided that you agree to comply with the following copyright notice and "
    "statements, including the disclaimer, and that the same appear on ALL copies of the "
    "software, database and documentation, including modifications that you make for internal "
    "use or for distribution. WordNet 3.0 Copyright 2006 by Princeton University. All rights "
    'reserved. THIS SOFTWARE AND DATABASE IS PROVIDED "AS IS" AND PRINCETON UNIVERSITY MAKES '
    "NO REPRESENTATIONS OR WARRANTIES, EXPRESS OR IMPLIED. BY WAY OF EXAMPLE, BUT NOT "
    "LIMITATION, PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS OR WARRANTIES OF MERCHANT- "
    "ABILITY OR FITNESS FOR ANY PARTICULAR PURPOSE OR THAT THE USE OF THE LICENSED SOFTWARE, "
    "DATABASE OR DOCUMENTATION WILL NOT INFRINGE ANY THIRD PARTY PATENTS, COPYRIGHTS, "
    "TRADEMARKS OR OTHER RIGHTS. The name of Princeton University or Princeton may not be used "
    "in advertising or publicity pertaining to distribution of the software and/or database. "
    "Title to copyright in this software, database and any associated documentation shall at "
    "all times remain with Princeton University and LICENSEE agrees to preserve same."
)


@dataclass(frozen=True)
class Synset:
    """One noun synset as read from ``data.noun``."""

    offset: str
    lemmas: tuple[str, ...]
    parents: tuple[str, ...]
    gloss: str


def read_synsets(path: Path) -> dict[str, Synset]:
    """Parse ``data.noun`` into synsets keyed by 8-digit offset."""
    synsets: dict[str, Synset] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):  # licence header
                continue
            fields, _, gloss = line.partition(" | ")
            parts = fields.split()
            offset, n_words = parts[0], int(parts[3], 16)
            lemmas = tuple(parts[4 + 2 * i] for i in range(n_words))
            pos = 4 + 2 * n_words
            n_pointers = int(parts[pos])
            parents = []
            for i in range(n_pointers):
                symbol, target, target_pos = parts[pos + 1 + 4 * i : pos + 4 + 4 * i]
                if symbol in UP_POINTERS and target_pos == "n":
                    parents.append(target)
            synsets[offset] = Synset(offset, lemmas, tuple(parents), gloss.strip())
    return synsets


def read_senses(path: Path) -> dict[str, list[str]]:
    """Parse ``index.noun``: lowercase lemma -> synset offsets in sense-number order."""
    senses: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):
                continue
            parts = line.split()
            n_synsets, n_pointers = int(parts[2]), int(parts[3])
            senses[parts[0]] = parts[4 + n_pointers + 2 : 4 + n_pointers + 2 + n_synsets]
    return senses


def short_gloss(gloss: str) -> str:
    """First clause of a gloss (before any ';' or example), cut to about 80 characters."""
    text = gloss.split(";")[0].split(' "')[0].strip()
    if len(text) > GLOSS_CHARS:
        text = text[: GLOSS_CHARS - 3].rsplit(" ", 1)[0].rstrip(",:") + "..."
    return text


def readable(lemma: str) -> str:
    """WordNet lemma as words: underscores become spaces."""
    return lemma.replace("_", " ")


def debian_version(package: str) -> str:
    """Installed Debian package version, or 'unknown'."""
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def read_wnids(wheel: Path) -> tuple[list[str], str]:
    """The wnid list from timm's wheel, and timm's version from the wheel's file name."""
    with zipfile.ZipFile(wheel) as archive:
        wnids = archive.read(TIMM_SYNSETS).decode("utf-8").split()
    found = re.match(r"timm-([^-]+)-", wheel.name)
    return wnids, found.group(1) if found else "unknown"


def build(wordnet: Path, wheel: Path) -> dict[str, object]:
    """Assemble the data file's content."""
    import torchvision
    from torchvision.models import ResNet50_Weights

    categories = list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    wnids, timm_version = read_wnids(wheel)
    if len(wnids) != 1000 or wnids != sorted(wnids) or len(categories) != 1000:
        sys.exit(f"{wheel}: expected 1000 sorted wnids; got {len(wnids)}")

    synsets = read_synsets(wordnet / "data.noun")
    index_senses = read_senses(wordnet / "index.noun")

    def lemma_key(lemma: str) -> str:
        return readable(lemma).casefold()

    matches = sum(
        any(lemma_key(w) == name.casefold() for w in synsets[wnid[1:]].lemmas)
        for wnid, name in zip(wnids, categories, strict=True)
    )
    if matches < 990:
        sys.exit(f"only {matches}/1000 torchvision names match a lemma; wrong wnid list?")

    # Every class and every ancestor of a class (hypernyms and instance hypernyms, transitively).
    beneath: dict[str, set[int]] = {}
    for index, wnid in enumerate(wnids):
        stack, seen = [wnid[1:]], set()
        while stack:
            offset = stack.pop()
            if offset in seen:
                continue
            seen.add(offset)
            beneath.setdefault(offset, set()).add(index)
            stack.extend(synsets[offset].parents)

    kept = sorted(beneath)
    groups = {
        f"n{offset}": [
            [readable(w) for w in synsets[offset].lemmas],
            short_gloss(synsets[offset].gloss),
            sorted(beneath[offset]),
        ]
        for offset in kept
    }
    # lowercase readable lemma -> [total senses, [sense number, wnid], ...] for kept senses only.
    senses: dict[str, list[object]] = {}
    for lemma in sorted({lemma_key(w) for o in kept for w in synsets[o].lemmas}):
        offsets = index_senses[lemma.replace(" ", "_")]
        chosen = [[n + 1, f"n{o}"] for n, o in enumerate(offsets) if o in beneath]
        senses[lemma] = [len(offsets), *chosen]

    script = Path(__file__).resolve().relative_to(REPO).as_posix()
    provenance = {
        "wordnet": {
            "source": "WordNet 3.0 noun database (data.noun, index.noun), Debian package "
            f"wordnet-base {debian_version('wordnet-base')}",
            "license": "WordNet 3.0 licence (Princeton University; permissive, BSD-like: use, "
            "copy, modify and distribute with the notice below kept)",
            "notice": WORDNET_LICENSE,
        },
        "wnids": {
            "source": f"timm {timm_version} wheel, timm/data/_info/imagenet_synsets.txt "
            "(the 1000 ImageNet-1k wnids; index order = sorted order)",
            "license": "timm is Apache-2.0",
        },
        "categories": {
            "source": f"torchvision {torchvision.__version__}, "
            'ResNet50_Weights.IMAGENET1K_V1.meta["categories"]',
            "license": "torchvision is BSD-3-Clause",
            "lemma_matches": f"{matches}/1000 names equal a WordNet lemma of their synset",
        },
        "made_by": script,
        "groups": "wnid -> [lemmas, short gloss, sorted class indices beneath it] for every "
        "WordNet noun synset that is an ImageNet-1k class or an ancestor of one (hypernym and "
        "instance-hypernym pointers, transitively)",
        "senses": "lowercase lemma -> [number of WordNet noun senses, [sense number, wnid], ...] "
        "for the senses kept in groups",
    }
    return {
        "provenance": provenance,
        "categories": categories,
        "wnids": wnids,
        "groups": groups,
        "senses": senses,
    }


def main() -> None:
    """Parse arguments, build, write minified JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet", type=Path, default=DEFAULT_WORDNET)
    parser.add_argument("--timm-wheel", type=Path, required=True, help="timm-*.whl")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    data = build(args.wordnet, args.timm_wheel)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    args.out.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({len(text.encode()) / 1024:.0f} KiB, {len(data['groups'])} groups)")


if __name__ == "__main__":
    main()
