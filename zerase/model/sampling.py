"""How a model samples and trains by default (no torch, so the control plane can read it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingSettings:
    steps: int
    guidance_scale: float
    height: int
    width: int


@dataclass(frozen=True)
class TrainingDefaults:
    """What an erasure trains on when the request names nothing: the resolution its trajectory banks are
    sampled at (the gate is resolution-free, so training may be smaller than serving) and its batch sizes."""

    height: int
    width: int
    erase_batch: int  # erase samples per step
    preserve_batch: int  # fresh preservation states per step (each is scored with c_pr and with ∅)
    trajectories: int  # frozen trajectories per bank
