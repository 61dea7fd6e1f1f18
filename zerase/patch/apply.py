"""Serving erasures: N artifacts applied at once to a loaded pipeline, text-gated, swappable.

Multi-concept erasure is the weighted LoRA average of Appendix F (Eq. 63): ΔW = Σ w_i ΔW_i, by
default w_i = 1/N. The sum is kept in low rank: the artifacts' factors stacked, A = [A_1; …; A_N]
and B = [w_1 s_1 B_1, …, w_N s_N B_N], so B·A = Σ w_i ΔW_i exactly, no dense ΔW is ever built, and
the base weights are never touched (nor reloaded).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from diffusers import ZImagePipeline

from zerase.model.generate import set_prompt_hook
from zerase.patch.artifact import ArtifactError, LoraArtifact, check_base_model
from zerase.patch.lora import GatedLoraModel, LoraSpec


def stack_factors(artifacts: Sequence[LoraArtifact], weights: Sequence[float] | None = None
                  ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per module path, (A, B) in fp32 with B·A = Σ w_i ΔW_i (Eq. 63); weights default to 1/N."""
    if weights is None:
        weights = [1.0 / len(artifacts)] * len(artifacts)
    if len(weights) != len(artifacts):
        raise ValueError("one weight per artifact")
    parts: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for artifact, w in zip(artifacts, weights, strict=True):
        for path in artifact.module_paths:
            a_list, b_list = parts.setdefault(path, ([], []))
            a_list.append(artifact.tensors[f"{path}.lora_A.weight"].float())
            b_list.append(w * artifact.scale * artifact.tensors[f"{path}.lora_B.weight"].float())
    return {path: (torch.cat(a), torch.cat(b, dim=1)) for path, (a, b) in parts.items()}


def stack_slots(slots: Sequence[LoraArtifact]) -> dict[str, torch.Tensor]:
    """Per path, the slot (index in `slots`) each column of `stack_factors(slots)` belongs to."""
    owners: dict[str, list[torch.Tensor]] = {}
    for i, artifact in enumerate(slots):
        for path in artifact.module_paths:
            rank = artifact.tensors[f"{path}.lora_A.weight"].shape[0]
            owners.setdefault(path, []).append(torch.full((rank,), i, dtype=torch.long))
    return {path: torch.cat(o) for path, o in owners.items()}


@dataclass(frozen=True)
class Routed:
    """Patches served per prompt: `slots`, each at weight 1, and `route(prompts)`, per prompt the slots its image
    gets. A pipeline call whose prompts are unknown (generated from features) gets `default`."""

    slots: tuple[LoraArtifact, ...]
    route: Callable[[Sequence[str]], list[tuple[int, ...]]]
    default: tuple[int, ...] = (0,)
    # Per prompt, the text its image is encoded from (zerase.serve.routing spells with zerase.train.prompts.as_trained);
    # None: as written.
    spell: Callable[[Sequence[str]], list[str]] | None = None


def merged_delta(factors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The dense Σ w_i ΔW_i per path, for checks and analysis (serving never builds it)."""
    return {path: b @ a for path, (a, b) in factors.items()}


class PatchedPipeline:
    """Owns the text-gated wrappers on one pipeline; `apply` swaps the active set, `clear` removes it."""

    def __init__(self, pipe: ZImagePipeline) -> None:
        self.pipe = pipe
        self._model: GatedLoraModel | None = None
        self.active: list[tuple[LoraArtifact, float]] = []

    def apply(self, artifacts: Sequence[LoraArtifact], weights: Sequence[float] | None = None,
              slots: dict[str, torch.Tensor] | None = None) -> None:
        """Replace the active patches (an empty list serves the base model); `slots`: their stacked columns' slots
        (`stack_slots`, routed serving: weights must be 1 each)."""
        self.clear()
        if not artifacts:
            return
        for a in artifacts:
            if a.metadata.get("gating") != "text-only":
                raise ArtifactError(f"{a.source}: gating {a.metadata.get('gating')!r} is not served "
                                    "(an ungated LoRA changes image tokens and collapses generation)")
            check_base_model(a, self.pipe.transformer)
        w = list(weights) if weights is not None else [1.0 / len(artifacts)] * len(artifacts)
        factors = stack_factors(artifacts, w)
        layers = sorted({int(p.split(".")[1]) for p in factors})
        targets = sorted({p.rsplit(".", 1)[1] for p in factors})
        self._model = GatedLoraModel(self.pipe.transformer, LoraSpec(tuple(targets), tuple(layers)))
        self._model.set_factors(factors, slots)
        self.active = list(zip(artifacts, w))

    def apply_routed(self, routed: Routed) -> None:
        """Replace the active patches by `routed`: every `generate` on this pipeline routes its prompts."""
        self.apply(routed.slots, [1.0] * len(routed.slots), stack_slots(routed.slots))
        assert self._model is not None
        model, n = self._model, len(routed.slots)

        def mask(of: Sequence[int]) -> torch.Tensor:
            on = torch.zeros(n, dtype=torch.bool)
            on[list(of)] = True
            return on

        def hook(prompts: Sequence[str] | None) -> Sequence[str] | None:
            model.route(None if prompts is None else torch.stack([mask(r) for r in routed.route(prompts)]))
            return None if prompts is None or routed.spell is None else routed.spell(prompts)

        model.route(None, mask(routed.default))
        set_prompt_hook(self.pipe, hook)

    def serve(self, patch: LoraArtifact | Routed) -> None:
        """One artifact at weight 1, or a routed set."""
        if isinstance(patch, Routed):
            self.apply_routed(patch)
        else:
            self.apply([patch])

    def clear(self) -> None:
        set_prompt_hook(self.pipe, None)
        if self._model is not None:
            self._model.remove()
            self._model = None
        self.active = []
