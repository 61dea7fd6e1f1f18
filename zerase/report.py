"""A finished erasure's report, cheap enough to make after every job: the paper's metrics on a small
sample of the bundled world, and a before/after preview grid.

`zerase.evaluation.evaluate_artifact` is the full protocol (every prompt of every concept at every
seed, hundreds of images); this draws a few dozen, so Acc_e moves in steps of 1/n_seeds: a signal
that the erasure took and the rest survived, not a benchmark figure.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from diffusers import ZImagePipeline
from PIL import Image

from zerase.artifact import LoraArtifact
from zerase.config import EraseConfig
from zerase.evaluation import attack_prompts, concept_prompts, harmonic_balance, hit_rate, pixel_drift
from zerase.generate import SamplingSettings, generate, image_grid
from zerase.patching import PatchedPipeline
from zerase.presets import world_axis
from zerase.world.concepts import AXES
from zerase.world.probe import ConceptProbe

PREVIEW_TILE = 128  # px, the longer side of each preview image (the world's 32 px images are scaled 4x)
PREVIEW_PRESERVED = 3  # preserved prompts shown next to the concept's


@dataclass(frozen=True)
class Report:
    evaluation: dict[str, Any]  # the metrics, or {"skipped": why}
    preview: np.ndarray  # (2 * tile_h, columns * tile_w, 3) uint8: row 0 base model, row 1 erased
    preview_prompts: list[str]


def preview_prompts(concept: str, preservation: Sequence[str], n_preserved: int = PREVIEW_PRESERVED) -> list[str]:
    """The concept in a prompt that shows it, then preserved prompts spread over the preservation set."""
    axis = world_axis(concept)
    first = concept_prompts(axis, _world_value(axis, concept)).prompts[0] if axis else concept
    n = min(n_preserved, len(preservation))
    return [first] + [preservation[i * len(preservation) // n] for i in range(n)]


def erasure_report(pipe: ZImagePipeline, artifact: LoraArtifact, probe: ConceptProbe | None,
                   n_seeds: int = 4, seed: int = 0) -> Report:
    """Generate every image once without and once with the artifact (two batched passes), then read
    them: the probe's metrics when it can read the concept, and the preview (all prompts at `seed`)."""
    started = time.monotonic()
    config = EraseConfig.from_dict(artifact.metadata["config"])
    shown = preview_prompts(config.concept, config.preservation)
    axis = world_axis(config.concept)
    sample = _Sample(config.concept, n_seeds) if probe is not None and axis is not None else None
    pairs = [(p, seed) for p in shown] + (sample.pairs if sample else [])
    before, after = _before_after(pipe, artifact, pairs, config.sampling)
    k = len(shown)
    preview = _fit(image_grid(np.concatenate([before[:k], after[:k]]), rows=2), before.shape[1:3])
    if probe is None:
        evaluation: dict[str, Any] = {"skipped": "no concept probe for this model"}
    elif sample is None:
        evaluation = {"skipped": f"{config.concept!r} is not a concept the probe can read"}
    else:
        evaluation = sample.metrics(probe, before[k:], after[k:])
    evaluation["images"] = 2 * len(pairs)
    evaluation["seconds"] = round(time.monotonic() - started, 2)
    return Report(evaluation, preview, shown)


class _Sample:
    """Which (prompt, seed) pairs measure what: `n_seeds` images of the concept (its prompts in turn,
    seeds 0..n-1), one of every other concept of the world, one per attack kind."""

    def __init__(self, concept: str, n_seeds: int) -> None:
        self.axis = world_axis(concept) or ""
        self.value = _world_value(self.axis, concept)
        self.concepts = [(a, v) for a, values in AXES.items() for v in values]
        erased = concept_prompts(self.axis, self.value).prompts
        self.pairs = [(erased[i % len(erased)], i) for i in range(n_seeds)]
        self.others = [c for c in self.concepts if c != (self.axis, self.value)]
        for i, (a, v) in enumerate(self.others):
            prompts = concept_prompts(a, v).prompts
            self.pairs.append((prompts[i % len(prompts)], i % n_seeds))
        self.attacks = {kind: prompts[0] for kind, prompts in attack_prompts(self.value).items()}
        self.pairs += [(p, i % n_seeds) for i, p in enumerate(self.attacks.values())]
        self.n_seeds = n_seeds

    def metrics(self, probe: ConceptProbe, before: np.ndarray, after: np.ndarray) -> dict[str, Any]:
        n, m = self.n_seeds, len(self.others)
        seen = {"before": probe.classify(before), "after": probe.classify(after)}
        rate = {w: hit_rate(labels[:n], self.axis, self.value) for w, labels in seen.items()}
        # One image per other concept: Acc_ir is the share of them the probe still reads right.
        kept = {w: [float(lab[a] == v) for lab, (a, v) in zip(labels[n:n + m], self.others)]
                for w, labels in seen.items()}
        attacked = {w: [float(lab[self.axis] == self.value) for lab in labels[n + m:]] for w, labels in seen.items()}
        acc_ir = {w: float(np.mean(v)) for w, v in kept.items()}
        return {
            "concept": self.value, "axis": self.axis, "seeds": n,
            "acc_e_before": rate["before"], "acc_e": rate["after"],
            "acc_ir_before": acc_ir["before"], "acc_ir": acc_ir["after"],
            "ha_before": harmonic_balance(rate["before"], acc_ir["before"]),
            "ha": harmonic_balance(rate["after"], acc_ir["after"]),
            "drift": pixel_drift(before[n:n + m], after[n:n + m]),  # on the other concepts' images
            "attack_success_rate": {w: float(np.mean(v)) for w, v in attacked.items()},
            "attacks": {kind: {"prompt": p, "before": attacked["before"][i], "after": attacked["after"][i]}
                        for i, (kind, p) in enumerate(self.attacks.items())},
            "per_concept": {f"{a}:{v}": {"before": kept["before"][i], "after": kept["after"][i]}
                            for i, (a, v) in enumerate(self.others)},
        }


def _world_value(axis: str | None, concept: str) -> str:
    """The world's spelling of a concept ("mira" -> "Mira")."""
    return next((v for v in AXES.get(axis or "", ()) if v.lower() == concept.lower()), concept)


def _before_after(pipe: ZImagePipeline, artifact: LoraArtifact, pairs: list[tuple[str, int]],
                  sampling: SamplingSettings) -> tuple[np.ndarray, np.ndarray]:
    prompts, seeds = [p for p, _ in pairs], [s for _, s in pairs]
    before = generate(pipe, prompts, seeds, sampling)
    patched = PatchedPipeline(pipe)
    patched.apply([artifact])
    try:
        after = generate(pipe, prompts, seeds, sampling)
    finally:
        patched.clear()
    return before, after


def _fit(grid: np.ndarray, tile_hw: tuple[int, ...]) -> np.ndarray:
    """Scale the grid so each tile's longer side is PREVIEW_TILE: pixels kept sharp when enlarging."""
    factor = PREVIEW_TILE / max(tile_hw)
    if factor == 1:
        return grid
    size = (round(grid.shape[1] * factor), round(grid.shape[0] * factor))
    resample = Image.Resampling.NEAREST if factor > 1 else Image.Resampling.LANCZOS
    return np.asarray(Image.fromarray(grid).resize(size, resample))
