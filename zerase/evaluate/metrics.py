"""The paper's metrics on an evaluator's readings (zerase.evaluate.evaluation says what each means): hit rates,
Ha, pixel drift, each kept concept before -> after with the worst first, from a plan's images before and after."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from zerase.evaluate.plan import ERASED, KEPT, Evaluator, Measured, Plan


def worst_kept(per_concept: Mapping[str, Mapping[str, float]]) -> dict[str, Any] | None:
    """The kept concept whose rate dropped most: {"concept", "before", "after", "drop"} (None: none kept)."""
    drops = {key: r["before"] - r["after"] for key, r in per_concept.items()}
    if not drops:
        return None
    worst = min(drops, key=lambda k: (-drops[k], k))  # a tie goes to the first name, as the deploy gate orders
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
