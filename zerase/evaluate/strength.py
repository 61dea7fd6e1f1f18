"""The strength an erasure is served at: the smallest multiple of its trained LoRA scale at which the concept's own
prompts and its string attacks stop drawing it, found on seeds the job's evaluation never uses.

Trained to keep the rest (the null-space constraint, the unnamed prior), a shape's or a style's ΔW points the right
way but falls short: on the world, circle's default erasure leaves the shape in 0.21 of its images at 1x, 0.04 at
1.5x, 0.00 at 2x; star 0.35, 0.12, 0.12 (benchmarks/RESULTS.md, "Served strength"). Served routed, a prompt gets the
erasure only when it names the concept, so the stronger erasure reaches few kept prompts: those that name the concept
too ("a blue circle" keeps blue), which the search checks against the erasure at its trained strength (what the
job's gate judges either way). The paper's reference code serves its LoRAs at lora_scale 15 for the same reason.

The strength is written into the artifact (alpha = strength x trained alpha, `strength` and `trained_alpha` beside
it), so everything downstream (serving, fusion, the deployment's evaluation) serves the same patch without knowing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from diffusers import ZImagePipeline

from zerase.evaluate.plan import ERASED, KEPT, Evaluator, Shot
from zerase.model.generate import generate
from zerase.model.sampling import SamplingSettings
from zerase.patch.apply import PatchedPipeline
from zerase.patch.artifact import LoraArtifact
from zerase.train.prompts import concept_spans

STRENGTHS = (1.0, 1.5, 2.0, 3.0)
SEED_OFFSET = 1000  # calibration seeds start here: the job's evaluation (seeds 0..n-1) judges on images it never saw


@dataclass(frozen=True)
class StrengthSearch:
    strength: float  # the one chosen
    tried: list[dict[str, Any]]  # per strength tried: acc_e (the concept's and attack shots), named_kept, images


def strengthened(artifact: LoraArtifact, strength: float) -> LoraArtifact:
    """`artifact` served at `strength` times its trained scale (a no-op at 1)."""
    if strength == 1.0:
        return artifact
    trained = float(artifact.metadata.get("trained_alpha", artifact.metadata["alpha"]))
    return replace(artifact, metadata=artifact.metadata | {"alpha": trained * strength, "strength": strength,
                                                           "trained_alpha": trained})


def calibration_shots(evaluator: Evaluator, concept: str, n_seeds: int, category: str | None = None,
                      preservation: Sequence[str] = (), anchor: str | None = None) -> list[Shot]:
    """The concept's prompts at `n_seeds` calibration seeds, each attack prompt at one, and the kept concepts' prompts
    that name the concept (the ones routing sends to this erasure) at `n_seeds`."""
    plan = evaluator.plan(concept, n_seeds, full=True, category=category, preservation=preservation, anchor=anchor)
    out, attacked = [], set()
    for s in plan.shots:
        if s.role == KEPT and not concept_spans(s.prompt, concept):
            continue
        if s.role not in (ERASED, KEPT):  # an attack prompt: one image each
            if s.prompt in attacked:
                continue
            attacked.add(s.prompt)
        out.append(replace(s, seed=s.seed + SEED_OFFSET))
    return out


def search_strength(pipe: ZImagePipeline, artifact: LoraArtifact, evaluator: Evaluator, sampling: SamplingSettings,
                    *, n_seeds: int = 4, strengths: Sequence[float] = STRENGTHS, target: float = 0.05,
                    kept_limit: float = 0.1, category: str | None = None) -> StrengthSearch:
    """Try `strengths` in order (the first: the trained one, 1) and stop at the first whose Acc_e (the concept's and
    its attack shots) is within `target` while the kept shots naming the concept lose at most `kept_limit` more than
    at the first; when none reaches the target, the one of lowest Acc_e within `kept_limit` (ties: the weaker)."""
    config = artifact.metadata["config"]
    shots = calibration_shots(evaluator, str(config["concept"]), n_seeds, category, config.get("preservation", ()),
                              config.get("anchor"))
    prompts, seeds = [s.prompt for s in shots], [s.seed for s in shots]
    erased = [i for i, s in enumerate(shots) if s.role != KEPT]
    kept = [i for i, s in enumerate(shots) if s.role == KEPT]

    def rate(readings: list[set[str]], idx: list[int]) -> float:
        return sum(shots[i].concept in readings[i] for i in idx) / len(idx)

    patched, tried = PatchedPipeline(pipe), list[dict[str, Any]]()
    try:
        for strength in strengths:
            patched.apply([strengthened(artifact, strength)], [1.0])
            readings = evaluator.read(generate(pipe, prompts, seeds, sampling), prompts)
            tried.append({"strength": strength, "acc_e": round(rate(readings, erased), 4),
                          "named_kept": round(rate(readings, kept), 4) if kept else None, "images": len(shots)})
            if tried[-1]["acc_e"] <= target and _keeps(tried[-1], tried[0], kept_limit):
                break
    finally:
        patched.clear()
    return StrengthSearch(choose(tried, target, kept_limit), tried)


def choose(tried: Sequence[dict[str, Any]], target: float, kept_limit: float) -> float:
    """Of the strengths `tried` (the first the trained one), the weakest within `target` that keeps the named kept
    prompts within `kept_limit` of the first; else the lowest Acc_e that keeps them (ties: the weaker)."""
    allowed = [t for t in tried if _keeps(t, tried[0], kept_limit)]
    best = min(allowed, key=lambda t: (t["acc_e"] > target, t["acc_e"] if t["acc_e"] > target else 0, t["strength"]))
    return float(best["strength"])


def _keeps(tried: dict[str, Any], trained: dict[str, Any], limit: float) -> bool:
    return tried["named_kept"] is None or trained["named_kept"] - tried["named_kept"] <= limit + 1e-9
