"""Serving erasures: N artifacts applied at once to a loaded pipeline, text-gated, swappable.

Multi-concept erasure is the weighted LoRA average of Appendix F (Eq. 63): ΔW = Σ w_i ΔW_i, by
default w_i = 1/N. The merged ΔW is folded into one caption-row weight per projection, so any
number of artifacts costs what one does, and the base model is never reloaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import ZImagePipeline

from zerase.artifact import ArtifactError, LoraArtifact, check_base_model
from zerase.lora import GatedLoraModel, LoraSpec


def merge_weights(artifacts: Sequence[LoraArtifact], weights: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    """Σ w_i ΔW_i per module path (Eq. 63); weights default to the normalised average 1/N."""
    if weights is None:
        weights = [1.0 / len(artifacts)] * len(artifacts)
    if len(weights) != len(artifacts):
        raise ValueError("one weight per artifact")
    merged: dict[str, torch.Tensor] = {}
    for artifact, w in zip(artifacts, weights):
        for path, delta in artifact.delta_weights().items():
            merged[path] = merged[path] + w * delta if path in merged else w * delta
    return merged


class PatchedPipeline:
    """Owns the text-gated wrappers on one pipeline; `apply` swaps the active set, `clear` removes it."""

    def __init__(self, pipe: ZImagePipeline) -> None:
        self.pipe = pipe
        self._model: GatedLoraModel | None = None
        self.active: list[tuple[LoraArtifact, float]] = []

    def apply(self, artifacts: Sequence[LoraArtifact], weights: Sequence[float] | None = None) -> None:
        """Replace the active patches (an empty list serves the base model)."""
        self.clear()
        if not artifacts:
            return
        for a in artifacts:
            if a.metadata.get("gating") != "text-only":
                raise ArtifactError(f"{a.source}: gating {a.metadata.get('gating')!r} is not served "
                                    "(an ungated LoRA changes image tokens and collapses generation)")
            check_base_model(a, self.pipe.transformer)
        w = list(weights) if weights is not None else [1.0 / len(artifacts)] * len(artifacts)
        merged = merge_weights(artifacts, w)
        layers = sorted({int(p.split(".")[1]) for p in merged})
        targets = sorted({p.rsplit(".", 1)[1] for p in merged})
        self._model = GatedLoraModel(self.pipe.transformer, LoraSpec(tuple(targets), tuple(layers)))
        self._model.set_merged(merged)
        self.active = list(zip(artifacts, w))

    def clear(self) -> None:
        if self._model is not None:
            self._model.remove()
            self._model = None
        self.active = []
