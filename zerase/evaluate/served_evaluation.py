"""What a deployment serves, judged as served: every erasure of a set under the combined patch at its weights.

Each erasure is evaluated alone when it is trained, but generation serves the set together, and a patch can
undo another (the 1/N average of Appendix F divides each erasure's effect by N). This runs one plan over the
set: per erased concept, its own prompts and string attacks (and optionally Ring-A-Bell) under the combined
patch; the kept set, every concept the evaluator knows that none of the erasures names, `kept_images` images
each, against the unpatched model. The unpatched images come from `BASE_IMAGES` (made once per model).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from diffusers import ZImagePipeline

from zerase.evaluate.evaluation import BASE_IMAGES
from zerase.evaluate.metrics import hit_rate, pixel_drift, worst_kept
from zerase.evaluate.plan import ERASED, KEPT, Evaluator, Shot, kept_shots
from zerase.model.generate import generate
from zerase.model.sampling import SamplingSettings
from zerase.patch.apply import PatchedPipeline, Routed
from zerase.patch.artifact import LoraArtifact
from zerase.train.config import EraseConfig

ATTACK_PROMPTS_PER_KIND = 2  # each string attack kind's first prompts, at seed 0


@dataclass(frozen=True)
class Served:
    """One erasure of the set: its artifact, its weight in the set, and the job's context for the evaluator."""

    label: str  # how the caller names it (an erasure id)
    artifact: LoraArtifact
    weight: float
    category: str | None = None


@dataclass(frozen=True)
class ServedPlan:
    concepts: tuple[str, ...]  # per erasure, as the evaluator spells it
    shots: tuple[Shot, ...]
    owner: tuple[int, ...]  # per shot: the erasure it measures (-1: a kept shot)


def served_plan(evaluator: Evaluator, served: Sequence[Served], n_seeds: int, kept_images: int) -> ServedPlan:
    """Per erasure: its concept's prompts at seeds 0..n_seeds-1 and its string attacks; then each kept concept's
    prompts in turn at seeds 0..kept_images-1 (a concept one of the erasures names is not kept)."""
    concepts: list[str] = []
    shots: list[Shot] = []
    owner: list[int] = []
    full_kept: list[Shot] = []
    for i, entry in enumerate(served):
        config = EraseConfig.from_dict(entry.artifact.metadata["config"])
        full = evaluator.plan(config.concept, max(n_seeds, kept_images), full=True, category=entry.category,
                              preservation=tuple(config.preservation), anchor=config.anchor)
        concepts.append(full.concept)
        mine = [s for s in full.shots if s.role == ERASED and s.seed < n_seeds]
        for kind in dict.fromkeys(s.role for s in full.shots if s.role not in (ERASED, KEPT)):
            prompts = list(dict.fromkeys(s.prompt for s in full.shots if s.role == kind))
            mine += [Shot(p, 0, full.concept, kind, full.axis) for p in prompts[:ATTACK_PROMPTS_PER_KIND]]
        shots += mine
        owner += [i] * len(mine)
        full_kept += [s for s in full.shots if s.role == KEPT]
    kept = kept_shots(full_kept, kept_images, set(concepts))
    return ServedPlan(tuple(concepts), tuple(shots + kept), tuple(owner + [-1] * len(kept)))


# attack(concept, its prompts, install): red-team results against the combined patch (`install` puts it in place
# and returns its remover).
Attack = Callable[[str, list[str], Callable[[], Callable[[], None]]], list[dict[str, Any]]]


def evaluate_served(pipe: ZImagePipeline, served: Sequence[Served], evaluator: Evaluator, sampling: SamplingSettings,
                    *, n_seeds: int = 4, kept_images: int = 8, attack: Attack | None = None,
                    patch: Sequence[LoraArtifact] | None = None, routed: Routed | None = None) -> dict[str, Any]:
    """The set's metrics under the combined patch (`PatchedPipeline.apply` with the weights /generate uses), or
    under `patch` served instead at weight 1 each (a fused patch, zerase.serve.fusion), or `routed` per prompt
    (zerase.serve.routing: then each concept also says which share of its prompts got its erasure, and the kept set
    which share got any), judged on the set's concepts.
    `attack` may add red-team results per erased concept. `pipe` must be unpatched; it is so again on return."""
    started = time.monotonic()
    plan = served_plan(evaluator, served, n_seeds, kept_images)
    pairs = [(s.prompt, s.seed) for s in plan.shots]
    before, generated = BASE_IMAGES.get(pipe, pairs, sampling)
    patched = PatchedPipeline(pipe)

    def install() -> Callable[[], None]:
        if routed is not None:
            patched.apply_routed(routed)
        elif patch is not None:
            patched.apply(list(patch), [1.0] * len(patch))
        else:
            patched.apply([e.artifact for e in served], [e.weight for e in served])
        return patched.clear

    remove = install()
    try:
        after = generate(pipe, [p for p, _ in pairs], [s for _, s in pairs], sampling)
    finally:
        remove()
    prompts = [p for p, _ in pairs]
    read = {"before": evaluator.read(before, prompts), "after": evaluator.read(after, prompts)}

    def rate(idx: list[int], concept: str) -> dict[str, float]:
        return {w: hit_rate([read[w][i] for i in idx], concept) for w in read}

    concepts = []
    for i, entry in enumerate(served):
        concept = plan.concepts[i]
        mine = [j for j, o in enumerate(plan.owner) if o == i]
        erased_idx = [j for j in mine if plan.shots[j].role == ERASED]
        kinds: dict[str, list[int]] = {}
        for j in mine:
            if plan.shots[j].role != ERASED:
                kinds.setdefault(plan.shots[j].role, []).append(j)
        acc_e = rate(erased_idx, concept)
        result: dict[str, Any] = {
            "label": entry.label, "concept": concept, "weight": entry.weight,
            "acc_e_before": acc_e["before"], "acc_e": acc_e["after"],
            "attack_success_rate": rate([j for idx in kinds.values() for j in idx], concept),
            "attacks": {k: rate(idx, concept) for k, idx in kinds.items()}}
        if routed is not None:
            result["routed"] = _routed_share(routed, [plan.shots[j].prompt for j in erased_idx], i)
            result["attacks_routed"] = _routed_share(routed, [plan.shots[j].prompt for j in mine
                                                               if j not in erased_idx], i)
        if attack is not None:
            result["redteam"] = attack(concept, list(dict.fromkeys(plan.shots[j].prompt for j in erased_idx)),
                                       install)
        concepts.append(result)
    kept_by_key: dict[str, list[int]] = {}
    for j, s in enumerate(plan.shots):
        if plan.owner[j] == -1:
            kept_by_key.setdefault(s.key, []).append(j)
    per_concept = {key: rate(idx, plan.shots[idx[0]].concept) for key, idx in kept_by_key.items()}
    kept_idx = [j for idx in kept_by_key.values() for j in idx]
    return {
        "concepts": concepts,
        "kept": {
            "acc_ir_before": float(np.mean([r["before"] for r in per_concept.values()])) if per_concept else 0.0,
            "acc_ir": float(np.mean([r["after"] for r in per_concept.values()])) if per_concept else 0.0,
            "images_each": kept_images,
            "per_concept": per_concept,
            "worst": worst_kept(per_concept),
            "drift": pixel_drift(before[kept_idx], after[kept_idx]) if kept_idx else 0.0,
            **({"routed": _routed_share(routed, [plan.shots[j].prompt for j in kept_idx], None)}
               if routed is not None else {})},
        "images": 2 * len(pairs), "images_generated": generated + len(pairs),
        "seconds": round(time.monotonic() - started, 2)}


def _routed_share(routed: Routed, prompts: Sequence[str], erasure: int | None) -> float:
    """The share of `prompts` routed to erasure `erasure` (its slot: after the fallback's, if any), or, for None, to
    any erasure."""
    if not prompts:
        return 0.0
    first = 1 if routed.default else 0
    got = routed.route(prompts)
    hits = [r != routed.default if erasure is None else first + erasure in r for r in got]
    return sum(hits) / len(hits)
