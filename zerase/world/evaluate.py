"""How well a pipeline draws the world: probe hit rates of generated images per axis."""

from __future__ import annotations

import itertools

import numpy as np
from diffusers import ZImagePipeline

from zerase.model.generate import generate
from zerase.model.sampling import SamplingSettings
from zerase.world.concepts import CHARACTERS, COLOURS, SHAPES, STYLES, object_prompt
from zerase.world.probe import ConceptProbe

GRID_SEEDS = 8


def prompt_expectations() -> list[tuple[str, dict[str, str]]]:
    """Every fully specified prompt of the world with the labels its images must show."""
    cases = [(object_prompt(c, s, st), {"colour": c, "shape": s, "style": st})
             for c, s, st in itertools.product(COLOURS, SHAPES, STYLES)]
    cases += [(ch.name, {"character": ch.name}) for ch in CHARACTERS]
    return cases


def world_accuracy(pipe: ZImagePipeline, probe: ConceptProbe, settings: SamplingSettings,
                   n_seeds: int) -> tuple[dict[str, float], dict[str, float], np.ndarray]:
    """Per-axis share of images that show what the prompt asked for, over seeds 0..n_seeds-1, and the
    same per character (each must be drawn recognisably, not only on average).

    Also returns a sample grid: GRID_SEEDS seeds for a spread of prompts (one row each).
    """
    hits: dict[str, list[bool]] = {}
    per_character: dict[str, float] = {}
    grid_rows = []
    for k, (prompt, expected) in enumerate(prompt_expectations()):
        images = generate(pipe, [prompt] * n_seeds, list(range(n_seeds)), settings)
        preds = probe.classify(images)
        for pred in preds:
            for axis, value in expected.items():
                hits.setdefault(axis, []).append(pred[axis] == value)
        if "character" in expected:
            per_character[expected["character"]] = round(float(np.mean([p["character"] == expected["character"]
                                                                       for p in preds])), 4)
        if k % 5 == 0 or expected.get("character"):
            row = images[:GRID_SEEDS]
            if len(row) < GRID_SEEDS:
                row = np.concatenate([row, np.zeros((GRID_SEEDS - len(row), *row.shape[1:]), np.uint8)])
            grid_rows.append(row)
    accuracy = {axis: round(float(np.mean(v)), 4) for axis, v in hits.items()}
    return accuracy, per_character, np.concatenate(grid_rows)
