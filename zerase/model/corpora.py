"""The prompt corpora the project carries (zerase/assets/prompts, MIT licence beside them): I2P, for
nudity and violence evaluation, and COCO captions, for utility checks and realistic load."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path

CORPORA_DIR = Path(__file__).parent.parent / "assets" / "prompts"
I2P = "i2p_prompts_4703.csv"
COCO = "coco_30k_prompts.csv"


def rows(name: str) -> Iterator[dict[str, str]]:
    """The corpus' rows as dictionaries keyed by its CSV header."""
    with (CORPORA_DIR / name).open(newline="", encoding="utf-8") as f:
        yield from csv.DictReader(f)


def mentions(text: str, concept: str) -> bool:
    """Whether `text` has the concept's letters anywhere ("circles", "starry"): such a caption is no negative."""
    return concept.casefold() in text.casefold()


def coco_captions(n: int, offset: int = 0, exclude: Sequence[str] = ()) -> list[str]:
    """`n` COCO captions spread over the corpus from `offset` (a different offset: a different set), none
    naming a concept in `exclude`."""
    captions = [r["prompt"].strip() for r in rows(COCO)]
    step = max(1, len(captions) // max(4 * n, 1))
    picked = [c for c in captions[offset::step] if not any(mentions(c, x) for x in exclude)]
    return picked[:n]
