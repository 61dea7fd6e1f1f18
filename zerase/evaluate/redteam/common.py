"""What every red-team attack shares: its budget, its result, and generation from caption features.

An attack is judged the way the erasure is (zerase.evaluate.evaluation): images generated WITH the
intervention installed, read by the model's `Evaluator`; the same attack inputs on the unpatched
model are the reference (an attack that fails there says nothing about the erasure).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers import ZImagePipeline

from zerase.model.generate import sample
from zerase.model.sampling import SamplingSettings

# Installs an intervention (an artifact, token zeroing...) for generating these prompts and returns its
# remover. It is given the prompts because token zeroing must locate the concept in them first.
Install = Callable[[Sequence[str]], Callable[[], None]]


def no_intervention(prompts: Sequence[str]) -> Callable[[], None]:
    """The unpatched model, as an `Install`."""
    return lambda: None


@dataclass(frozen=True)
class RedTeamBudget:
    """How hard each attack tries. `prompts` and `steps` are the service's settings (ZERASE_REDTEAM_*);
    the rest are the attacks' own knobs, at values that suit both the tiny world and Z-Image Turbo."""

    prompts: int = 2  # concept prompts attacked, per attack
    steps: int = 20  # Ring-A-Bell: generations of the genetic search; UnlearnDiff: optimiser steps
    seed: int = 0
    # Ring-A-Bell
    eta: float = 2.0  # strength of the concept vector added to the neutral prompt's features (η)
    population: int = 32  # prompts per generation
    candidates: int = 64  # vocabulary tokens the search draws from (nearest to the concept's tokens)
    # UnlearnDiff
    # Adam's step on the perturbation, in units of the features' RMS. Adam moves an entry by about lr per step at
    # most, so lr x steps bounds the perturbation (0.4 RMS here): the attack's strength. Unbounded, a feature
    # attack inverts any caption-row ΔW (on the world, lr 0.05 took a 200-step Z-Erase from 0 to 100%).
    lr: float = 0.02
    states: int = 8  # noisy states x_t per optimiser step
    trajectories: int = 1  # frozen-model trajectories per attacked prompt (states: trajectories x sampling steps)
    free_tokens: int = 0  # extra caption rows appended to each attacked prompt's features

    def __post_init__(self) -> None:
        positive = {"prompts": self.prompts, "steps": self.steps, "population": self.population,
                    "candidates": self.candidates, "states": self.states, "trajectories": self.trajectories}
        bad = [k for k, v in positive.items() if v < 1]
        if bad or self.free_tokens < 0 or self.lr <= 0 or self.population < 2:
            raise ValueError(f"invalid red-team budget {self}")


@dataclass(frozen=True)
class AttackResult:
    """One attack against one intervention on one concept."""

    name: str  # "ring_a_bell" or "unlearndiff"
    success_rate: float  # share of attack images, intervention installed, in which the evaluator reads the concept
    success_rate_unpatched: float  # the same attack inputs on the unpatched model
    prompts: int  # attack inputs tried (each at every seed)
    seconds: float
    inputs: list[str] = field(default_factory=list)  # Ring-A-Bell: the prompts found; UnlearnDiff: the attacked ones
    images: int = 0  # generated, both models together
    details: dict[str, Any] = field(default_factory=dict)  # the search's distances, the optimiser's objective

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextmanager
def installed(install: Install, prompts: Sequence[str]) -> Iterator[None]:
    """The intervention installed for the block, removed however it ends."""
    remove = install(prompts)
    try:
        yield
    finally:
        remove()


@torch.no_grad()
def generate_from_features(pipe: ZImagePipeline, features: Sequence[torch.Tensor], seeds: Sequence[int],
                           settings: SamplingSettings, negative: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """`zerase.model.generate.generate` with caption features in place of prompts: (N, H, W, 3) uint8, one image per
    (features, seed) pair, each from its own seeded noise (drawn as `generate` draws it: a seed means the same
    image there and here for the same prompt's features)."""
    if len(features) != len(seeds):
        raise ValueError("features and seeds must have the same length")
    out = [np.zeros((0, settings.height, settings.width, 3), np.uint8)]
    for i in range(0, len(features), batch_size):
        chunk = [f.detach() for f in features[i:i + batch_size]]
        out.append(sample(pipe, chunk, [negative] * len(chunk), seeds[i:i + batch_size], settings))
    return np.concatenate(out)
