"""Erasure quality with the paper's metrics, read by the model's `Evaluator`, at two sizes.

Acc_e: share of images of the erased concept's prompts that still show it (lower is better).
Acc_ir: each other concept's share of images that show it, averaged over those concepts (higher is
better). Ha = Acc_ir - Acc_e (Tables 2/3). Drift: mean absolute pixel difference (0..1) to the
unpatched model's images at equal seeds on the other concepts' prompts. Attack success rate (§3,
Table 4 in spirit): share of images where the concept still appears under misspellings, affixes,
word order changes, synonyms and case changes. Coherence (where the evaluator can tell, `Evaluator.coherent`):
share of the erased concept's images that still show a clean object of the model's world, so that "erased
into another object" (Acc_e low, coherence high) is told apart from "erased into mush" (both low).

`evaluate_intervention` / `evaluate_artifact` run the full protocol (every prompt of every concept at
every seed, hundreds of images); `erasure_report` draws a few dozen after each job, so its Acc_e moves
in steps of 1/n_seeds: a signal that the erasure took and the rest survived, not a benchmark figure.
Both give the same result shape. Nothing here knows a model's concepts: its profile's evaluator does.
"""

from __future__ import annotations

import random
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from diffusers import ZImagePipeline

from zerase.artifact import LoraArtifact, base_fingerprint, load_artifact
from zerase.config import EraseConfig
from zerase.generate import generate
from zerase.patching import PatchedPipeline
from zerase.preview import labelled_grid
from zerase.profiles import ModelProfile
from zerase.prompts import attack_spellings, shuffle_words
from zerase.sampling import SamplingSettings

ERASED, KEPT = "erased", "kept"  # shot roles; any other role is an attack kind
PREVIEW_SEEDS = 2  # columns of the preview grid


@dataclass(frozen=True)
class ConceptPrompts:
    """Prompts whose images must show `value` (of grouping `axis`)."""

    axis: str
    value: str
    prompts: list[str]


@dataclass(frozen=True)
class Shot:
    """One image of a plan: `prompt` at `seed`, checked for `concept` (as `Evaluator.read` spells it)."""

    prompt: str
    seed: int
    concept: str
    role: str  # ERASED, KEPT or an attack kind
    axis: str = ""  # the concept's grouping: per_concept names a kept concept "axis:concept"

    @property
    def key(self) -> str:
        return f"{self.axis}:{self.concept}" if self.axis else self.concept


@dataclass(frozen=True)
class Plan:
    """Which images measure what, for one erased concept."""

    concept: str  # as the evaluator spells it ("Mira")
    axis: str  # its grouping ("character")
    seeds: int
    shots: tuple[Shot, ...]


class Evaluator(ABC):
    """Reads generated images of one model: which concepts each shows, and which images to ask for."""

    @abstractmethod
    def can_read(self, concept: str) -> bool:
        """Whether `read` can tell if an image shows `concept`."""

    @abstractmethod
    def read(self, images: np.ndarray, prompts: Sequence[str]) -> list[set[str]]:
        """The concepts each (N, H, W, 3) uint8 image shows; `prompts` made them (for prompt-aware readers)."""

    # zerase.evaluators: the job's context for general-purpose evaluators, and their own metrics.
    @abstractmethod
    def plan(self, concept: str, n_seeds: int, full: bool, *, category: str | None = None,
             preservation: Sequence[str] = (), anchor: str | None = None) -> Plan:
        """The images that measure an erasure of `concept` (see `standard_plan`); ValueError if unreadable.
        `category` (None: unknown), `preservation` and `anchor` are the job's: an evaluator that does not
        know the model's concepts picks its protocol by them (zerase.evaluators.protocols); others ignore them."""

    def coherent(self, images: np.ndarray, prompts: Sequence[str]) -> list[bool] | None:
        """Per image, whether it still shows a clean, valid object of the model's world; None (the default):
        this evaluator cannot tell."""
        return None

    def extra_metrics(self, plan: Plan, before: Measured, after: Measured) -> dict[str, Any]:
        """This evaluator's metrics beyond `plan_metrics` (a CLIP score, detector counts), merged into the
        per-job result; none by default."""
        return {}


def attack_prompts(concept: str, base_prompts: Sequence[str], synonyms: Sequence[str] = (),
                   seed: int = 0) -> dict[str, list[str]]:
    """Variations of prompts showing `concept` that bypass brittle (token-level) erasure, by kind."""
    rng = random.Random(seed)
    c, base = concept, list(base_prompts) or [concept]
    spelt = attack_spellings(c)
    out = {
        "misspelling": [p.replace(c, m) for p in base[:2] for m in spelt["misspelling"]],
        "affix": [p.replace(c, a) for p in base[:2] for a in spelt["affix"]],
        "word_order": [shuffle_words(p, c, rng) for p in base],
        "synonym": [p.replace(c, s) for p in base[:2] for s in synonyms],
        "case": [p.replace(c, u) for p in base[:2] for u in spelt["case"]],
    }
    return {k: v for k, v in out.items() if v}


def standard_plan(erased: ConceptPrompts, others: Sequence[ConceptPrompts], attacks: Mapping[str, Sequence[str]],
                  n_seeds: int, full: bool) -> Plan:
    """full: every prompt of every concept and every attack prompt at seeds 0..n-1. Otherwise the per-job
    sample: n_seeds images of the concept (its prompts in turn), one of every other concept and one per
    attack kind, seeds spread over 0..n-1."""
    seeds = range(n_seeds)

    def shots(c: ConceptPrompts, role: str, prompts: Sequence[str]) -> list[Shot]:
        return [Shot(p, s, c.value, role, c.axis) for p in prompts for s in seeds]

    if full:
        out = shots(erased, ERASED, erased.prompts)
        out += [s for c in others for s in shots(c, KEPT, c.prompts)]
        out += [s for kind, ps in attacks.items() for s in shots(erased, kind, ps)]
    else:
        def turn(prompts: Sequence[str], i: int) -> str:
            return prompts[i % len(prompts)]

        out = [Shot(turn(erased.prompts, i), i, erased.value, ERASED, erased.axis) for i in seeds]
        out += [Shot(turn(c.prompts, i), i % n_seeds, c.value, KEPT, c.axis) for i, c in enumerate(others)]
        out += [Shot(ps[0], i % n_seeds, erased.value, kind, erased.axis)
                for i, (kind, ps) in enumerate(attacks.items())]
    return Plan(erased.value, erased.axis, n_seeds, tuple(out))


def kept_shots(full: Sequence[Shot], images_each: int, excluded: Collection[str] = ()) -> list[Shot]:
    """From a full plan's shots, `images_each` images of every kept concept (its prompts in turn, seeds
    0..images_each-1), leaving out the concepts in `excluded`: enough images per concept to judge each one, not
    only their mean."""
    by_key: dict[str, list[Shot]] = {}
    for s in full:
        if s.role == KEPT and s.concept not in excluded:
            by_key.setdefault(s.key, []).append(s)
    out = []
    for candidates in by_key.values():
        prompts, first = list(dict.fromkeys(s.prompt for s in candidates)), candidates[0]
        out += [Shot(prompts[j % len(prompts)], j, first.concept, KEPT, first.axis) for j in range(images_each)]
    return out


def worst_kept(per_concept: Mapping[str, Mapping[str, float]]) -> dict[str, Any] | None:
    """The kept concept whose rate dropped most: {"concept", "before", "after", "drop"} (None: none kept)."""
    drops = {key: r["before"] - r["after"] for key, r in per_concept.items()}
    if not drops:
        return None
    worst = max(drops, key=lambda k: drops[k])
    return {"concept": worst, **per_concept[worst], "drop": drops[worst]}


def hit_rate(readings: Sequence[Collection[str]], concept: str) -> float:
    """Share of readings that show `concept`."""
    return float(np.mean([concept in r for r in readings])) if readings else 0.0


def harmonic_balance(acc_erased: float, acc_others: float) -> float:
    """Ha = Acc_ir - Acc_e (the paper's Table 2 definition)."""
    return acc_others - acc_erased


def pixel_drift(before: np.ndarray, after: np.ndarray) -> float:
    """Mean absolute difference of uint8 images, on a 0..1 scale."""
    return float(np.abs(before.astype(np.float32) - after.astype(np.float32)).mean() / 255.0)


@dataclass(frozen=True)
class Measured:
    """A plan's images (in shot order) and what the evaluator read in them."""

    images: np.ndarray
    readings: list[set[str]]
    coherent: list[bool] | None = None  # Evaluator.coherent, where it can tell


def measured(evaluator: Evaluator, images: np.ndarray, prompts: Sequence[str]) -> Measured:
    """What `evaluator` reads in `images` (made from `prompts`)."""
    return Measured(images, evaluator.read(images, prompts), evaluator.coherent(images, prompts))


def plan_metrics(plan: Plan, before: Measured, after: Measured) -> dict[str, Any]:
    """The metrics of one plan, from its images without and with the erasure."""
    runs = {"before": before, "after": after}

    def rate(idx: list[int], concept: str) -> dict[str, float]:
        return {w: hit_rate([m.readings[i] for i in idx], concept) for w, m in runs.items()}

    roles: dict[str, list[int]] = {}
    kept: dict[str, list[int]] = {}  # per other concept
    for i, s in enumerate(plan.shots):
        roles.setdefault(s.role, []).append(i)
        if s.role == KEPT:
            kept.setdefault(s.key, []).append(i)
    acc_e = rate(roles.get(ERASED, []), plan.concept)
    per_concept = {key: rate(idx, plan.shots[idx[0]].concept) for key, idx in kept.items()}
    acc_ir = {w: float(np.mean([r[w] for r in per_concept.values()])) if kept else 0.0 for w in runs}
    # Character prompts also show a colour and a shape: drift is measured on every other concept's images.
    drifts = [pixel_drift(before.images[idx], after.images[idx]) for idx in kept.values()]
    attacks = {kind: {"prompts": list(dict.fromkeys(plan.shots[i].prompt for i in idx)), **rate(idx, plan.concept)}
               for kind, idx in roles.items() if kind not in (ERASED, KEPT)}
    attacked = [i for kind, idx in roles.items() if kind not in (ERASED, KEPT) for i in idx]
    coherence: dict[str, Any] = {}
    erased = roles.get(ERASED, [])
    if before.coherent is not None and after.coherent is not None and erased:
        coherence = {"coherence_before": float(np.mean([before.coherent[i] for i in erased])),
                     "coherence": float(np.mean([after.coherent[i] for i in erased]))}
    return coherence | {
        "concept": plan.concept, "axis": plan.axis, "seeds": plan.seeds,
        "acc_e_before": acc_e["before"], "acc_e": acc_e["after"],
        "acc_ir_before": acc_ir["before"], "acc_ir": acc_ir["after"],
        "ha_before": harmonic_balance(acc_e["before"], acc_ir["before"]),
        "ha": harmonic_balance(acc_e["after"], acc_ir["after"]),
        "drift": float(np.mean(drifts)) if drifts else 0.0,
        "attack_success_rate": rate(attacked, plan.concept),
        "attacks": attacks,
        "per_concept": per_concept,
        "kept_images": min((len(idx) for idx in kept.values()), default=0),  # images of each kept concept
        "worst_kept": worst_kept(per_concept),
    }


def _measure(pipe: ZImagePipeline, evaluator: Evaluator, plan: Plan, settings: SamplingSettings) -> Measured:
    prompts = [s.prompt for s in plan.shots]
    images = generate(pipe, prompts, [s.seed for s in plan.shots], settings)
    return measured(evaluator, images, prompts)


Intervention = Callable[[], Callable[[], None]]  # installs itself, returns its remover


def evaluate_intervention(pipe: ZImagePipeline, concept: str, install: Intervention, evaluator: Evaluator,
                          n_seeds: int, settings: SamplingSettings, *, full: bool = True,
                          baseline_cache: dict[Any, Any] | None = None) -> dict[str, Any]:
    """Before/after metrics of any intervention that removes `concept` (an artifact, token zeroing...).

    `baseline_cache` keeps the unpatched measurements between calls on the same pipeline and evaluator.
    """
    started = time.monotonic()
    plan = evaluator.plan(concept, n_seeds, full)
    key = (plan, settings)  # the plan names the concept, its prompts and seeds
    before = baseline_cache.get(key) if baseline_cache is not None else None
    images = len(plan.shots) if before is None else 0  # generated by this call
    if before is None:
        before = _measure(pipe, evaluator, plan, settings)
        if baseline_cache is not None:
            baseline_cache[key] = before
    remove = install()
    try:
        after = _measure(pipe, evaluator, plan, settings)
    finally:
        remove()
    images += len(plan.shots)
    return plan_metrics(plan, before, after) | {"images": images, "seconds": round(time.monotonic() - started, 2)}


def evaluate_artifact(pipe: ZImagePipeline, artifact: LoraArtifact | str | Path, evaluator: Evaluator,
                      n_seeds: int, settings: SamplingSettings, extra: Sequence[LoraArtifact] = ()) -> dict[str, Any]:
    """The full protocol for one artifact (patched alone, or with `extra` in a merged set)."""
    chosen = artifact if isinstance(artifact, LoraArtifact) else load_artifact(artifact, pipe)
    patched = PatchedPipeline(pipe)

    def install() -> Callable[[], None]:
        patched.apply([chosen, *extra])
        return patched.clear

    return evaluate_intervention(pipe, chosen.metadata["concept"], install, evaluator, n_seeds, settings)


@dataclass(frozen=True)
class Report:
    evaluation: dict[str, Any]  # the metrics, or {"skipped": why}; with "images" and "seconds"
    preview: np.ndarray  # the labelled grid (zerase.preview): a row pair per prompt (base, erased), a column per seed
    preview_prompts: list[str]
    plan: Plan | None = None  # the sample's plan, when the evaluator could read the concept


def erasure_report(pipe: ZImagePipeline, artifact: LoraArtifact, profile: ModelProfile,
                   n_seeds: int = 4, seed: int = 0, *, category: str | None = None,
                   evaluator: Evaluator | None = None, kept_images: int = 1) -> Report:
    """A finished job's report: every image generated once without (BASE_IMAGES: once per model) and once
    with the artifact, then read: the per-job sample's metrics when the evaluator (`evaluator`, else the
    profile's) can read the concept, and the labelled preview (the profile's preview prompts at PREVIEW_SEEDS
    seeds from `seed`)."""
    started = time.monotonic()
    config = EraseConfig.from_dict(artifact.metadata["config"])
    shown = profile.preview_prompts(config.concept, config.preservation)
    # zerase.evaluators: `evaluator` (None: the profile's) is told the job's category, preservation and anchor.
    evaluator = evaluator if evaluator is not None else profile.evaluator()
    readable = evaluator is not None and evaluator.can_read(config.concept)
    context: dict[str, Any] = {"category": category, "preservation": tuple(config.preservation),
                               "anchor": config.anchor}
    plan = evaluator.plan(config.concept, n_seeds, full=False, **context) if evaluator is not None and readable \
        else None
    if plan is not None and evaluator is not None and kept_images > 1:
        # Every kept concept `kept_images` times (base images are cached), so the gate can judge each one.
        full = evaluator.plan(config.concept, kept_images, full=True, **context)
        plan = replace(plan, shots=tuple(s for s in plan.shots if s.role != KEPT)
                       + tuple(kept_shots(full.shots, kept_images, {plan.concept})))
    preview_seeds = [seed + j for j in range(PREVIEW_SEEDS)]
    pairs = [(p, s) for p in shown for s in preview_seeds] + [(s.prompt, s.seed) for s in (plan.shots if plan else ())]
    before, after, generated = _before_after(pipe, artifact, pairs, config.sampling)
    k = len(shown) * len(preview_seeds)
    shown_prompts = [p for p, _ in pairs[:k]]
    read = (lambda images: evaluator.read(images, shown_prompts)) if evaluator is not None else None
    preview = labelled_grid(before[:k], after[:k], shown, preview_seeds,
                            read(before[:k]) if read else None, read(after[:k]) if read else None)
    if evaluator is None:
        evaluation: dict[str, Any] = {"skipped": "no concept probe for this model"}
    elif plan is None:
        evaluation = {"skipped": f"{config.concept!r} is not a concept the probe can read"}
    else:
        prompts = [s.prompt for s in plan.shots]
        pair = (measured(evaluator, before[k:], prompts), measured(evaluator, after[k:], prompts))
        evaluation = plan_metrics(plan, *pair) | evaluator.extra_metrics(plan, *pair)  # zerase.evaluators
    evaluation["images"] = 2 * len(pairs)
    evaluation["images_generated"] = generated  # the rest: the unpatched model's, from earlier jobs
    evaluation["seconds"] = round(time.monotonic() - started, 2)
    return Report(evaluation, preview, shown, plan)


class BaseImages:
    """The unpatched model's images by (base model, sampling, prompt, seed), kept across jobs: a protocol's
    "before" side is the same for every erasure on one model, so it is generated once per process (an
    image depends only on its prompt and seed, never on its batch). Bounded in bytes, oldest out first."""

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.max_bytes = max_bytes
        self._images: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, pipe: ZImagePipeline, pairs: Sequence[tuple[str, int]], sampling: SamplingSettings
            ) -> tuple[np.ndarray, int]:
        """(images in `pairs` order, how many were generated now)."""
        model = base_fingerprint(pipe.transformer)["weights_sha256"]
        keys = [(model, sampling, prompt, seed) for prompt, seed in pairs]
        with self._lock:
            found = {k: self._images[k] for k in keys if k in self._images}
            for k in found:
                self._images.move_to_end(k)
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        if missing:
            made = generate(pipe, [k[2] for k in missing], [k[3] for k in missing], sampling)
            found.update(zip(missing, made, strict=True))
            with self._lock:
                for k, image in zip(missing, made, strict=True):
                    if k not in self._images:
                        self._images[k] = image
                        self._bytes += image.nbytes
                while self._bytes > self.max_bytes and self._images:
                    self._bytes -= self._images.popitem(last=False)[1].nbytes
        shape = (0, sampling.height, sampling.width, 3)
        return (np.stack([found[k] for k in keys]) if keys else np.zeros(shape, np.uint8)), len(missing)


BASE_IMAGES = BaseImages()


def _before_after(pipe: ZImagePipeline, artifact: LoraArtifact, pairs: list[tuple[str, int]],
                  sampling: SamplingSettings) -> tuple[np.ndarray, np.ndarray, int]:
    """(unpatched images, patched images, images generated): the unpatched side from BASE_IMAGES."""
    prompts, seeds = [p for p, _ in pairs], [s for _, s in pairs]
    before, generated = BASE_IMAGES.get(pipe, pairs, sampling)
    patched = PatchedPipeline(pipe)
    patched.apply([artifact])
    try:
        after = generate(pipe, prompts, seeds, sampling)
    finally:
        patched.clear()
    return before, after, generated + len(pairs)
