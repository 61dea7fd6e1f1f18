"""The prompt corpora the project carries (zerase/assets/prompts, MIT licence beside them): I2P, for
nudity and violence evaluation, and COCO captions, for utility checks and realistic load."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

CORPORA_DIR = Path(__file__).parent / "assets" / "prompts"
I2P = "i2p_prompts_4703.csv"
COCO = "coco_30k_prompts.csv"


def rows(name: str) -> Iterator[dict[str, str]]:
    """The corpus' rows as dictionaries keyed by its CSV header."""
    with (CORPORA_DIR / name).open(newline="", encoding="utf-8") as f:
        yield from csv.DictReader(f)
