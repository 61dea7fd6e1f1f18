"""The one patch `/generate` serves for a set of erasures, by fusion method: shared by the deployment's evaluation
(the whole set) and a job's (its erasure alone, so a job is judged on the patch it would be served as)."""

from __future__ import annotations

from collections.abc import Sequence

from diffusers import ZImagePipeline

from zerase.model.profiles import ModelProfile
from zerase.patch.artifact import LoraArtifact
from zerase.serve.consolidation import ConsolidationSettings, consolidate
from zerase.serve.fusion import fuse_closed_form, fusion_prompts

METHODS = ("closed_form", "consolidated", "routed")
# The routed fallback serves only prompts naming none of the set: the kept concepts, and the attacks the router
# misses. Distilled from each erasure at its served strength with the kept term at weight 1, it took Uma, an outlined
# square nobody named, to 0.75 of her images (outlined served at 2×); at weight 4 she kept 1.00 and outlined's attacks
# through the set stayed as they were (synonyms 0.50). Distilled at the trained strength instead she kept 1.00 too,
# but outlined's synonyms came back (0.50 → 0.62 in the set, alone 0.10 → 0.19) (benchmarks/fallback_probe.py;
# benchmarks/RESULTS.md, "The fallback's kept weight").
FALLBACK_KEEP_WEIGHT = 4.0


def served_patch(pipe: ZImagePipeline, artifacts: Sequence[LoraArtifact], profile: ModelProfile,
                 method: str, *, keep_weight: float | None = None) -> LoraArtifact:
    """The closed-form fused patch of `artifacts` on `fusion_prompts`; "consolidated": then trained further toward
    each erasure's own outputs and the frozen model's on the kept prompts (zerase.serve.consolidation); "routed": that
    consolidated patch, the fallback of routed serving (zerase.serve.routing.routed_for), trained with its kept term
    weighted FALLBACK_KEEP_WEIGHT. `keep_weight` overrides the consolidation's kept weight (to compare fallbacks)."""
    if method not in METHODS:
        raise ValueError(f"unknown fusion {method!r}; one of {', '.join(METHODS)}")
    erase, keep = fusion_prompts(profile, artifacts)
    fused = fuse_closed_form(pipe, artifacts, erase, keep, profile.sampling)
    if method in ("consolidated", "routed"):
        weight = keep_weight if keep_weight is not None else FALLBACK_KEEP_WEIGHT if method == "routed" else 1.0
        settings = ConsolidationSettings(keep_weight=weight)
        fused = consolidate(pipe, artifacts, erase, keep, profile.sampling, settings, init=fused)
    return fused
