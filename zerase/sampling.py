"""How a model samples by default: steps, guidance and size (no torch, so the control plane can read it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingSettings:
    steps: int
    guidance_scale: float
    height: int
    width: int
