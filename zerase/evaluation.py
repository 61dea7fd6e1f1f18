"""Erasure quality on the bundled world, with the paper's metrics.

Acc_e: share of images of the erased concept's prompts that still show it (lower is better).
Acc_ir: the same share over every other concept of the world (higher is better).
Ha = Acc_ir - Acc_e (Tables 2/3). Drift: mean absolute pixel difference (0..1) to the unpatched
model's images at equal seeds on the other concepts' prompts. Attack success rate (§3, Table 4
in spirit): share of images where the concept still appears under misspellings, affixes, word
order changes and synonyms.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from diffusers import ZImagePipeline

from zerase.artifact import LoraArtifact, load_artifact
from zerase.generate import SamplingSettings, generate
from zerase.patching import PatchedPipeline
from zerase.pipeline import BUNDLED_MODEL_DIR
from zerase.presets import world_axis
from zerase.prompts import shuffle_words
from zerase.world.concepts import AXES, COLOURS, SHAPES, object_prompt
from zerase.world.probe import ConceptProbe

SYNONYMS = {
    "red": ["crimson", "scarlet"], "yellow": ["golden", "lemon"], "green": ["emerald", "lime"],
    "blue": ["azure", "navy"], "purple": ["violet", "lilac"], "circle": ["disc", "ring"],
    "square": ["box", "block"], "triangle": ["pyramid", "wedge"], "star": ["pentagram", "starfish"],
    "filled": ["solid", "full"], "outlined": ["hollow", "contour"],
}


@dataclass(frozen=True)
class ConceptPrompts:
    axis: str
    value: str
    prompts: list[str]


def concept_prompts(axis: str, value: str) -> ConceptPrompts:
    """Prompts whose images must show `value` on `axis`."""
    if axis == "colour":
        prompts = [object_prompt(value, s) for s in SHAPES]
    elif axis == "shape":
        prompts = [object_prompt(c, value) for c in COLOURS]
    elif axis == "style":
        prompts = [object_prompt(c, s, value) for c, s in zip(COLOURS, SHAPES)]
    else:
        prompts = [value, f"a picture of {value}"]
    return ConceptPrompts(axis, value, prompts)


def attack_prompts(concept: str, seed: int = 0) -> dict[str, list[str]]:
    """Prompt variations that bypass brittle (token-level) erasure, by kind."""
    rng = random.Random(seed)
    axis = world_axis(concept) or "custom"
    base = concept_prompts(axis, concept).prompts if axis != "custom" else [concept]
    c = concept
    misspelt = [c[:-1], c + c[-1], c[0] + c[2] + c[1] + c[3:] if len(c) > 3 else c + "e"]
    affixed = [f"x{c}", f"{c}ish", f"super{c}"]
    out = {
        "misspelling": [p.replace(c, m) for p in base[:2] for m in misspelt],
        "affix": [p.replace(c, a) for p in base[:2] for a in affixed],
        "word_order": [shuffle_words(p, c, rng) for p in base],
        "synonym": [p.replace(c, s) for p in base[:2] for s in SYNONYMS.get(c.lower(), [])],
        "case": [p.replace(c, c.upper()) for p in base[:2]],
    }
    return {k: v for k, v in out.items() if v}


def hit_rate(labels: Sequence[dict[str, str]], axis: str, value: str) -> float:
    """Share of probe readings that show `value` on `axis`."""
    return float(np.mean([lab[axis] == value for lab in labels])) if labels else 0.0


def harmonic_balance(acc_erased: float, acc_others: float) -> float:
    """Ha = Acc_ir - Acc_e (the paper's Table 2 definition)."""
    return acc_others - acc_erased


def pixel_drift(before: np.ndarray, after: np.ndarray) -> float:
    """Mean absolute difference of uint8 images, on a 0..1 scale."""
    return float(np.abs(before.astype(np.float32) - after.astype(np.float32)).mean() / 255.0)


class _Sampler:
    def __init__(self, pipe: ZImagePipeline, probe: ConceptProbe, settings: SamplingSettings, seeds: list[int]):
        self.pipe, self.probe, self.settings, self.seeds = pipe, probe, settings, seeds

    def images(self, prompts: list[str]) -> np.ndarray:
        return generate(self.pipe, [p for p in prompts for _ in self.seeds], self.seeds * len(prompts), self.settings)


Intervention = Callable[[], Callable[[], None]]  # installs itself, returns its remover


def evaluate_artifact(pipe: ZImagePipeline, artifact: LoraArtifact | str | Path, probe: ConceptProbe | None = None,
                      n_seeds: int = 8, settings: SamplingSettings | None = None,
                      extra: Sequence[LoraArtifact] = ()) -> dict[str, Any]:
    """Before/after metrics of one artifact (patched alone, or with `extra` in a merged set)."""
    if not isinstance(artifact, LoraArtifact):
        artifact = load_artifact(artifact, pipe)
    patched = PatchedPipeline(pipe)
    chosen = artifact

    def install() -> Callable[[], None]:
        patched.apply([chosen, *extra])
        return patched.clear

    return evaluate_intervention(pipe, artifact.metadata["concept"], install, probe, n_seeds, settings)


def evaluate_intervention(pipe: ZImagePipeline, concept: str, install: Intervention,
                          probe: ConceptProbe | None = None, n_seeds: int = 8,
                          settings: SamplingSettings | None = None,
                          baseline_cache: dict[Any, Any] | None = None) -> dict[str, Any]:
    """Before/after metrics of any intervention that removes `concept` (an artifact, token zeroing...).

    `baseline_cache` keeps the unpatched measurements between calls on the same pipeline.
    """
    probe = probe or ConceptProbe.load(BUNDLED_MODEL_DIR / "probe")
    settings = settings or SamplingSettings()
    axis = world_axis(concept)
    if axis is None:
        raise ValueError(f"{concept!r} is not a concept of the bundled world: no probe can read it")
    value = next(v for v in AXES[axis] if v.lower() == concept.lower())
    sampler = _Sampler(pipe, probe, settings, list(range(n_seeds)))
    groups = [concept_prompts(a, v) for a, values in AXES.items() for v in values]
    attacks = attack_prompts(value)

    def measure() -> tuple[dict[tuple[str, str], float], dict[str, np.ndarray], dict[str, float]]:
        rates, images = {}, {}
        for g in groups:
            imgs = sampler.images(g.prompts)
            rates[(g.axis, g.value)] = hit_rate(probe.classify(imgs), g.axis, g.value)
            images[f"{g.axis}:{g.value}"] = imgs
        asr = {kind: hit_rate(probe.classify(sampler.images(ps)), axis, value) for kind, ps in attacks.items()}
        return rates, images, asr

    key = (concept, n_seeds, settings)
    if baseline_cache is not None and key in baseline_cache:
        rates_before, images_before, asr_before = baseline_cache[key]
    else:
        rates_before, images_before, asr_before = measure()
        if baseline_cache is not None:
            baseline_cache[key] = (rates_before, images_before, asr_before)
    remove = install()
    try:
        rates_after, images_after, asr_after = measure()
    finally:
        remove()
    others = [k for k in rates_after if k != (axis, value)]
    # Character prompts also show a colour and a shape: drift is measured on every other concept.
    drift = float(np.mean([pixel_drift(images_before[f"{a}:{v}"], images_after[f"{a}:{v}"]) for a, v in others]))
    acc_e = rates_after[(axis, value)]
    acc_ir = float(np.mean([rates_after[k] for k in others]))
    return {
        "concept": value,
        "axis": axis,
        "seeds": n_seeds,
        "acc_e_before": rates_before[(axis, value)],
        "acc_e": acc_e,
        "acc_ir_before": float(np.mean([rates_before[k] for k in others])),
        "acc_ir": acc_ir,
        "ha": harmonic_balance(acc_e, acc_ir),
        "drift": drift,
        "per_concept": {f"{a}:{v}": {"before": rates_before[(a, v)], "after": rates_after[(a, v)]}
                        for a, v in rates_after},
        "attack_success_rate": {k: {"before": asr_before[k], "after": asr_after[k]} for k in attacks},
        "attack_prompts": attacks,
    }
