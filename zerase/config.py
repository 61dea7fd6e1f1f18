"""The settings of one erasure run (hyperparameters default to the paper's §5.1)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from zerase.sampling import SamplingSettings

Target = Literal["esd", "anchor", "strip"]
Modulation = Literal["lagrangian", "fixed", "none"]
Gating = Literal["text", "all"]

# ε, the tolerated rise of L_pr: in (EPSILON_MIN, EPSILON_MAX]. The HTTP contract uses these bounds too.
EPSILON_MIN, EPSILON_MAX = 0.0, 1.0
DEFAULT_EPSILON = 1e-2


@dataclass
class EraseConfig:
    concept: str
    preservation: list[str]
    anchor: str | None = None
    # Erase target: "esd" = Eq. 5 negative guidance; "anchor" = v(x_t, c_anchor);
    # "strip" = v(x_t, prompt with the concept words removed), which keeps the rest of the scene.
    target: Target = "esd"
    epsilon: float = DEFAULT_EPSILON  # ε, Table 6 (presets.EPSILON per category)
    eta: float = 2.0  # η, negative guidance
    steps: int = 200
    rank: int = 4
    alpha: float | None = None  # LoRA alpha; None = rank (scale 1)
    lr: float = 1e-3  # α
    beta: float = 0.1  # β
    seed: int = 0
    targets: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v"])
    layers: list[int] | None = None  # None = every main layer
    attn_weight: float = 1.0  # weight of Eq. 6 inside L_er (Eq. 7 uses 1)
    modulation: Modulation = "lagrangian"
    fixed_lambda: float = 1.0  # λ when modulation == "fixed"
    gating: Gating = "text"  # "all" is the naive LoRA baseline of Fig. 3 (right)
    erase_batch: int = 8
    preserve_batch: int = 8  # fresh preservation states per step (each also seen the step after)
    trajectories: int = 32  # frozen trajectories per bank
    shuffle_variants: int = 2  # word-order shuffles per erase prompt
    erase_prompts: list[str] = field(default_factory=list)  # extra prompts showing the concept
    sample_steps: int = 8
    guidance_scale: float = 1.0
    height: int = 32
    width: int = 32

    def __post_init__(self) -> None:
        if not self.concept.strip():
            raise ValueError("concept must not be empty")
        if self.target == "anchor" and not self.anchor:
            raise ValueError("target 'anchor' needs an anchor prompt")
        if not EPSILON_MIN < self.epsilon <= EPSILON_MAX:
            raise ValueError(f"epsilon must be in ({EPSILON_MIN}, {EPSILON_MAX}]")
        if self.steps < 1 or self.rank < 1:
            raise ValueError("steps and rank must be positive")

    @property
    def sampling(self) -> SamplingSettings:
        return SamplingSettings(self.sample_steps, self.guidance_scale, self.height, self.width)

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha if self.alpha is not None else self.rank)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EraseConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown erase settings: {sorted(unknown)}")
        return cls(**data)
