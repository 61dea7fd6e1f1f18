"""The strength an erasure is served at: the smallest multiple of its trained LoRA scale at which the concept's own
prompts stop drawing it, stronger still while that cuts its string attacks and keeps the images coherent, found on
seeds the job's evaluation never uses.

Trained to keep the rest (the null-space constraint, the unnamed prior), a shape's or a style's ΔW points the right
way but falls short: on the world, circle's default erasure leaves the shape in 0.21 of its images at 1x, 0.04 at
1.5x, 0.00 at 2x; star 0.35, 0.12, 0.12 (benchmarks/RESULTS.md, "Served strength"). Served routed, a prompt gets the
erasure only when it names the concept, so the stronger erasure reaches few kept prompts: those that name the concept
too ("a blue circle" keeps blue), which the search checks against the erasure at its trained strength (what the
job's gate judges either way). The paper's reference code serves its LoRAs at lora_scale 15 for the same reason.

Attacks and coherence are judged apart from the concept's prompts. Pooled with them at one image per attack prompt,
"OUTLINED" was drawn in 0.44 of its images at 1.5x while the pool read 0.02; over 8 seeds outlined's attacks read
0.10 at 1.5x and 0.07 at 2x (coherence 0.92 -> 0.86), but 0.18 at 3x (coherence 0.70): past a point a stronger
erasure draws broken shapes that read as anything. And filled, erased at 2x (0.05), reached 0.00 at 3x only by
drawing broken rings (coherence 0.61 -> 0.38): a stronger strength must not buy its attacks with coherence.

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
from zerase.train.prompts import as_trained, concept_spans

STRENGTHS = (1.0, 1.5, 2.0, 3.0)
SEED_OFFSET = 1000  # calibration seeds start here: the job's evaluation (seeds 0..n-1) judges on images it never saw
# The concept's own prompts are drawn at this many times the attacks' seeds: Acc_e alone picks the strength, and at 4
# seeds (32 images for a style) its 0.05 target allowed one image. Filled at training seed 2 read 2 of 32 at 1.5x and
# 2x, so the search served it at 3x (coherence 0.19); at 8 seeds 1.25x read 3 of 64, coherence 0.80, where 2x reads
# 0.61 (benchmarks/RESULTS.md, "A finer strength"). The attacks' prompts outnumber the concept's by three to one, so
# this costs a quarter more images, not twice as many.
CONCEPT_SEED_FACTOR = 2
# Recorded with each search, so a benchmark cell searched otherwise can be told apart.
SEARCH = "ladder+midpoint, concept at 2x seeds, attacks spelt as served"


@dataclass(frozen=True)
class StrengthSearch:
    strength: float  # the one chosen
    # per strength tried: acc_e (the concept's shots), attack (its string attacks'), named_kept, coherence (of the
    # concept's shots; None: the evaluator cannot tell), images
    tried: list[dict[str, Any]]


@dataclass(frozen=True)
class StrengthLimits:
    target: float = 0.05  # Acc_e, then attack success, to reach
    kept_limit: float = 0.1  # how much more the kept prompts naming the concept may lose than at the first strength
    coherence_limit: float = 0.1  # how much coherence a strength past the first that erases may lose to cut attacks


def calibration_shots(evaluator: Evaluator, concept: str, n_seeds: int, category: str | None = None,
                      preservation: Sequence[str] = (), anchor: str | None = None,
                      concept_seed_factor: int = CONCEPT_SEED_FACTOR) -> list[Shot]:
    """The concept's prompts at `concept_seed_factor` x `n_seeds` calibration seeds; its attack prompts and the kept
    concepts' prompts that name the concept (the ones routing sends to this erasure) at `n_seeds`."""
    wide = max(concept_seed_factor, 1) * n_seeds
    plan = evaluator.plan(concept, wide, full=True, category=category, preservation=preservation, anchor=anchor)
    return [replace(s, seed=s.seed + SEED_OFFSET) for s in plan.shots
            if (s.role == ERASED or s.seed < n_seeds) and (s.role != KEPT or concept_spans(s.prompt, concept))]


def search_strength(pipe: ZImagePipeline, artifact: LoraArtifact, evaluator: Evaluator, sampling: SamplingSettings,
                    *, n_seeds: int = 4, strengths: Sequence[float] = STRENGTHS,
                    limits: StrengthLimits = StrengthLimits(), category: str | None = None) -> StrengthSearch:
    """Try `strengths` in rising order (the first: the trained one, 1) and stop once `choose` would not change its
    pick with a stronger one: it erases and its attacks are within the target, or a strength past the first that
    erases lost the named kept prompts or coherence (a stronger one would lose more). Then try once the midpoint
    between the weakest strength that erases and the one below it (`midpoint`): on the world every step of the
    ladder past what erases cost coherence (filled at training seed 2, over 64 images: 0.80 at 1.25x, 0.75 at 1.5x,
    0.61 at 2x)."""
    config = artifact.metadata["config"]
    concept = str(config["concept"])
    shots = calibration_shots(evaluator, concept, n_seeds, category, config.get("preservation", ()),
                              config.get("anchor"))
    # An attack that spells the concept in another case, a letter off or with letters around it is served spelt as
    # the erasure learnt it (zerase.serve.routing): it is judged so here too.
    prompts = [s.prompt if s.role in (ERASED, KEPT) else as_trained(s.prompt, [concept]) for s in shots]
    seeds = [s.seed for s in shots]
    roles = {"acc_e": [i for i, s in enumerate(shots) if s.role == ERASED],
             "attack": [i for i, s in enumerate(shots) if s.role not in (ERASED, KEPT)],
             "named_kept": [i for i, s in enumerate(shots) if s.role == KEPT]}

    def rate(readings: list[set[str]], idx: list[int]) -> float | None:
        return round(sum(shots[i].concept in readings[i] for i in idx) / len(idx), 4) if idx else None

    patched, tried = PatchedPipeline(pipe), list[dict[str, Any]]()

    def attempt(strength: float) -> None:
        patched.apply([artifact.at_strength(strength)], [1.0])
        images = generate(pipe, prompts, seeds, sampling)
        readings = evaluator.read(images, prompts)
        coherent = evaluator.coherent(images[roles["acc_e"]], [prompts[i] for i in roles["acc_e"]])
        tried.append({"strength": strength, **{k: rate(readings, idx) for k, idx in roles.items()},
                      "coherence": round(sum(coherent) / len(coherent), 4) if coherent else None,
                      "images": len(shots)})

    try:
        for strength in sorted(strengths):
            attempt(strength)
            if settled(tried, limits):
                break
        if (between := midpoint(tried, limits)) is not None:
            attempt(between)
    finally:
        patched.clear()
    return StrengthSearch(choose(tried, limits), sorted(tried, key=lambda t: t["strength"]))


def choose(tried: Sequence[dict[str, Any]], limits: StrengthLimits = StrengthLimits()) -> float:
    """Of the strengths `tried` (the weakest the trained one): among those that keep the named kept prompts within
    `kept_limit` of the weakest and erase (Acc_e within `target`), the one whose attacks exceed the target least
    without losing more than `coherence_limit` coherence against the weakest that erases (ties: the weaker); when
    none erases, the lowest Acc_e that keeps them (ties: the weaker)."""
    kept = _kept(tried, limits)
    erasing = [t for t in kept if t["acc_e"] <= limits.target]
    if not erasing:
        return float(min(kept, key=lambda t: (t["acc_e"], t["strength"]))["strength"])
    first = erasing[0]
    coherent = [t for t in erasing if _coherent(t, first, limits.coherence_limit)]
    return float(min(coherent, key=lambda t: (max((t["attack"] or 0.0) - limits.target, 0.0), t["strength"]))
                 ["strength"])


def settled(tried: Sequence[dict[str, Any]], limits: StrengthLimits = StrengthLimits()) -> bool:
    """Whether a stronger strength than those `tried` could no longer be chosen (see `search_strength`)."""
    last, kept = tried[-1], _kept(tried, limits)
    erasing = [t for t in kept if t["acc_e"] <= limits.target]
    if not erasing:
        return False
    if last is not erasing[0] and (last not in kept or not _coherent(last, erasing[0], limits.coherence_limit)):
        return True
    pick = next(t for t in tried if t["strength"] == choose(tried, limits))
    return (pick["attack"] or 0.0) <= limits.target


def midpoint(tried: Sequence[dict[str, Any]], limits: StrengthLimits = StrengthLimits()) -> float | None:
    """Halfway between the weakest strength `tried` that erases (keeping the named kept prompts) and the next weaker
    one tried, when that one does not erase; else None (the search halves once)."""
    ordered = sorted(tried, key=lambda t: t["strength"])
    erasing = [t for t in _kept(tried, limits) if t["acc_e"] <= limits.target]
    if not erasing or (i := ordered.index(erasing[0])) == 0:
        return None
    return round((ordered[i - 1]["strength"] + erasing[0]["strength"]) / 2, 4)


def _kept(tried: Sequence[dict[str, Any]], limits: StrengthLimits) -> list[dict[str, Any]]:
    ordered = sorted(tried, key=lambda t: t["strength"])
    weakest = ordered[0]["named_kept"]
    return [t for t in ordered
            if t["named_kept"] is None or weakest is None or weakest - t["named_kept"] <= limits.kept_limit + 1e-9]


def _coherent(tried: dict[str, Any], first: dict[str, Any], limit: float) -> bool:
    a, b = tried.get("coherence"), first.get("coherence")
    return a is None or b is None or b - a <= limit + 1e-9
