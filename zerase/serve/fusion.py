"""Serving many erasures at full strength: one caption-row patch fitted in closed form (MACE §3.3, its
`fuse_lora_close_form.py`, on the stream-disentangled LoRA of Eq. 4).

The paper's 1/N average divides every erasure's effect by N; the plain sum adds every patch to every prompt.
Instead, per gated projection, find the one ΔW that reproduces each erasure's own output on the caption-row
inputs of its concept's prompts, and leaves the frozen output on the kept prompts' inputs:

    min_ΔW  Σ_g ‖ΔW·X_g − ΔW_g·X_g‖² + ‖ΔW·X_k‖² + ρ‖ΔW − Σ_i ΔW_i‖²
    ⇒  ΔW · (Σ_g G_g + G_k + ρI) = Σ_g ΔW_g · G_g + ρ Σ_i ΔW_i,     G = X·Xᵀ / n   (d_in, d_in)

where g groups the erase prompts by which erased concepts they name, and ΔW_g is the sum of those erasures: "a red
circle" with red and circle both erased must lose both (fitted to one erasure at a time, the two targets pull the
shared inputs apart and each is half kept).

The inputs X are collected by running the model through its sampler (in a single-stream model the caption rows
also attend to the image, so they depend on the timestep and the latent): X_g with its erasures applied, on
its group's prompts, X_k unpatched, on the kept prompts. Each G is a mean over its tokens, so every concept
weighs the same whatever its prompts' lengths. The solution is kept at a fixed rank (truncated SVD), so serving
costs the same for any N.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import ZImagePipeline

from zerase.model.generate import generate
from zerase.model.profiles import ModelProfile
from zerase.model.sampling import SamplingSettings
from zerase.patch.apply import stack_factors
from zerase.patch.artifact import FORMAT, FORMAT_VERSION, LoraArtifact, write_artifact
from zerase.patch.lora import GatedLoraModel, LoraSpec, TextGatedLinear
from zerase.train.config import EraseConfig
from zerase.train.prompt_pool import prompt_pool
from zerase.train.prompts import concept_spans

FUSED_RANK = 32  # the served rank of a fused patch, whatever N


class _Grams:
    """Per projection, the running sum of x·xᵀ over the caption rows (real tokens only) it sees, in fp64."""

    def __init__(self, model: GatedLoraModel) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self._handles = [m.register_forward_pre_hook(self._hook(path)) for path, m in model.modules.items()]

    def _hook(self, path: str) -> Any:
        def hook(module: TextGatedLinear, args: tuple[torch.Tensor, ...]) -> None:
            span, h = module.tracker.span, args[0]  # h: (B, L, d_in)
            assert span is not None and span.uniform_image_len is not None
            start = span.uniform_image_len
            rows = torch.cat([h[b, start:start + n] for b, n in enumerate(span.caption_lens)]).double()
            self.sums[path] = self.sums.get(path, 0) + rows.T @ rows  # (d_in, d_in)
            self.counts[path] = self.counts.get(path, 0) + rows.shape[0]
        return hook

    def means(self) -> dict[str, torch.Tensor]:
        return {path: g / max(self.counts[path], 1) for path, g in self.sums.items()}

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def fusion_prompts(profile: ModelProfile, artifacts: Sequence[LoraArtifact], *, variants: int = 12,
                   seed: int = 0) -> tuple[list[list[str]], list[str]]:
    """(per artifact, the prompts its output is reproduced on; the prompts kept frozen). An erasure's: the model's
    prompts of its concept and `variants` rewordings and respellings of them (zerase.train.prompt_pool: never the
    evaluation's attack spellings), so the fused patch acts where the erasure acts, not on a few strings alone.
    Kept: the empty prompt and every preservation prompt of the set that names none of its concepts, each as the
    model's profile shows it (`expand_preservation`: a bare name in its prompts, as a requested item is expanded).
    Kept as bare names only ("Vex"), the fused patch of 12 characters halved look-alike characters in their other
    prompts ("a picture of Vex": 1.00 → 0.50), which each erasure alone kept (benchmarks/RESULTS.md)."""
    configs = [EraseConfig.from_dict(a.metadata["config"]) for a in artifacts]
    rng = random.Random(seed)
    erase = []
    for c in configs:
        pool = prompt_pool(c.concept, variants, 2, rng, category=None, contexts=profile.erase_prompts(c.concept),
                           perturb=0.5, synonyms=c.synonyms, templates=0.25)
        erase.append(list(dict.fromkeys([*profile.erase_prompts(c.concept), *(p.text for g in pool for p in g)])))
    keep = ["", *dict.fromkeys(p for c in configs for item in c.preservation for p in profile.expand_preservation(item)
                               if not any(concept_spans(p, other.concept) for other in configs))]
    return erase, keep


def prompt_groups(artifacts: Sequence[LoraArtifact], erase_prompts: Sequence[Sequence[str]]
                  ) -> dict[frozenset[int], list[str]]:
    """The erase prompts grouped by which erasures they name. A prompt that names several erased concepts ("a red
    circle", red and circle both erased) must lose all of them: its target is those erasures applied together."""
    concepts = [str(a.metadata["config"]["concept"]) for a in artifacts]
    groups: dict[frozenset[int], list[str]] = {}
    for i, prompts in enumerate(erase_prompts):
        for prompt in prompts:
            named = frozenset({i} | {j for j, c in enumerate(concepts) if concept_spans(prompt, c)})
            groups.setdefault(named, []).append(prompt)
    return groups


def fused_metadata(artifacts: Sequence[LoraArtifact], paths: Sequence[str], rank: int, fusion: dict[str, Any]
                   ) -> dict[str, Any]:
    """A fused patch's artifact metadata: text-gated, rank `rank` at scale 1, `fusion` saying how it was made."""
    first = artifacts[0].metadata
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "base_model": first["base_model"],
            "target_modules": sorted({p.rsplit(".", 1)[1] for p in paths}),
            "layers": sorted({int(p.split(".")[1]) for p in paths}), "rank": rank, "alpha": float(rank),
            "gating": "text-only", "concept": " + ".join(str(a.metadata.get("concept")) for a in artifacts),
            "fusion": {"sources": [a.metadata.get("concept") for a in artifacts],
                       "source_strengths": [float(a.metadata.get("strength", 1.0)) for a in artifacts], **fusion}}


def caption_grams(pipe: ZImagePipeline, patch: Sequence[LoraArtifact], prompts: Sequence[str], seeds: Sequence[int],
                  sampling: SamplingSettings, paths: Sequence[str]) -> dict[str, torch.Tensor]:
    """G = mean of x·xᵀ over the caption-row inputs of each projection in `paths`, generating `prompts` at `seeds`
    through the sampler with `patch` applied at weight 1 each (none: the frozen model)."""
    layers = tuple(sorted({int(p.split(".")[1]) for p in paths}))
    targets = tuple(sorted({p.rsplit(".", 1)[1] for p in paths}))
    model = GatedLoraModel(pipe.transformer, LoraSpec(targets, layers))
    grams = _Grams(model)
    try:
        if patch:
            model.set_factors(stack_factors(patch, [1.0] * len(patch)))
        pairs = [(p, s) for p in prompts for s in seeds]
        with torch.no_grad():
            generate(pipe, [p for p, _ in pairs], [s for _, s in pairs], sampling)
        return grams.means()
    finally:
        grams.close()
        model.remove()


def _sum(deltas: Sequence[dict[str, torch.Tensor]], which: Any, path: str) -> torch.Tensor:
    """Σ ΔW_j over `which`, in fp64, (d_out, d_in)."""
    return torch.stack([deltas[j][path].double() for j in which if path in deltas[j]]).sum(0)


def fuse_closed_form(pipe: ZImagePipeline, artifacts: Sequence[LoraArtifact], erase_prompts: Sequence[Sequence[str]],
                     keep_prompts: Sequence[str], sampling: SamplingSettings, *, seeds: Sequence[int] = (0, 1),
                     rank: int = FUSED_RANK, ridge: float = 1e-3, keep_weight: float = 1.0) -> LoraArtifact:
    """One text-gated LoRA of `rank` serving every artifact at full strength (see the module's docstring).
    `erase_prompts[i]`: erasure i's concept prompts; `ridge` ρ relative to the mean diagonal of the system."""
    if not artifacts:
        raise ValueError("nothing to fuse")
    started = time.monotonic()
    paths = sorted({p for a in artifacts for p in a.module_paths})
    groups = prompt_groups(artifacts, erase_prompts)
    own = {named: caption_grams(pipe, [artifacts[j] for j in sorted(named)], prompts, seeds, sampling, paths)
           for named, prompts in groups.items()}
    kept = caption_grams(pipe, [], keep_prompts, seeds, sampling, paths)
    deltas = [a.delta_weights() for a in artifacts]
    tensors: dict[str, torch.Tensor] = {}
    for path in paths:
        lhs = keep_weight * kept[path] + torch.stack([g[path] for g in own.values()]).sum(0)  # (d_in, d_in)
        # (d_out, d_in): on each group's inputs, the output of the erasures its prompts name
        rhs = torch.stack([_sum(deltas, named, path) @ g[path] for named, g in own.items()]).sum(0)
        # ρ pulls ΔW toward the plain sum, not toward 0: in directions no prompt here reaches (a respelling, a new
        # context) each erasure keeps its full strength, as served alone.
        rho = ridge * lhs.diagonal().mean()
        lhs = lhs + rho * torch.eye(lhs.shape[0], dtype=lhs.dtype)
        rhs = rhs + rho * _sum(deltas, range(len(deltas)), path)
        delta = torch.linalg.solve(lhs, rhs.T).T  # lhs is symmetric: ΔW = rhs · lhs⁻¹
        u, s, vh = torch.linalg.svd(delta.float(), full_matrices=False)
        r = min(rank, s.shape[0])
        tensors[f"{path}.lora_B.weight"] = (u[:, :r] * s[:r]).contiguous()  # (d_out, r)
        tensors[f"{path}.lora_A.weight"] = vh[:r].contiguous()  # (r, d_in)
    r = tensors[f"{paths[0]}.lora_A.weight"].shape[0]
    meta = fused_metadata(artifacts, paths, r, {"method": "closed_form", "ridge": ridge, "keep_weight": keep_weight,
                                                 "seeds": list(seeds), "seconds": round(time.monotonic() - started, 2)})
    return LoraArtifact(tensors, meta, "fused")


def save_fused(artifact: LoraArtifact, path: Path) -> Path:
    """Write a fused patch in the artifact format (`zerase.patch.artifact.load_artifact` reads it back)."""
    return write_artifact(artifact, path)
