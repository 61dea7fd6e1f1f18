"""The one patch `/generate` serves for a set of erasures, by fusion method: shared by the deployment's evaluation
(the whole set) and a job's (its erasure alone, so a job is judged on the patch it would be served as)."""

from __future__ import annotations

from collections.abc import Sequence

from diffusers import ZImagePipeline

from zerase.model.profiles import ModelProfile
from zerase.patch.artifact import LoraArtifact
from zerase.serve.consolidation import consolidate
from zerase.serve.fusion import fuse_closed_form, fusion_prompts

METHODS = ("closed_form", "consolidated", "routed")


def served_patch(pipe: ZImagePipeline, artifacts: Sequence[LoraArtifact], profile: ModelProfile,
                 method: str) -> LoraArtifact:
    """The closed-form fused patch of `artifacts` on `fusion_prompts`; "consolidated": then trained further toward
    each erasure's own outputs and the frozen model's on the kept prompts (zerase.serve.consolidation); "routed": that
    consolidated patch, the fallback of routed serving (zerase.serve.routing.routed_for), made from each erasure at
    its trained strength: routing serves an erasure at its served strength to the prompts naming its concept, and the
    fallback only to prompts naming none of the set. Distilled at the served strength (2× for "outlined"), it took
    an outlined character nobody named from 1.00 to 0.62 (benchmarks/RESULTS.md, "The fallback at trained
    strength")."""
    if method not in METHODS:
        raise ValueError(f"unknown fusion {method!r}; one of {', '.join(METHODS)}")
    if method == "routed":
        artifacts = [a.at_strength(1.0) for a in artifacts]
    erase, keep = fusion_prompts(profile, artifacts)
    fused = fuse_closed_form(pipe, artifacts, erase, keep, profile.sampling)
    if method in ("consolidated", "routed"):
        fused = consolidate(pipe, artifacts, erase, keep, profile.sampling, init=fused)
    return fused
