"""The settings of one erasure run (hyperparameters default to the paper's §5.1).

How training samples (schedule, guidance, resolution, batch sizes) has no default here: it belongs to
the loaded model, and a tiny model's 32 px would silently become a real model's training size.
`zerase.train.presets.resolve(..., model=...)` fills it from the model's profile.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from zerase.model.sampling import SamplingSettings

Target = Literal["esd", "anchor", "strip", "replace"]
Modulation = Literal["lagrangian", "level", "fixed", "none"]
Gating = Literal["text", "all"]

# ε, the tolerated rise of L_pr: in (EPSILON_MIN, EPSILON_MAX]. The HTTP contract uses these bounds too.
EPSILON_MIN, EPSILON_MAX = 0.0, 1.0
DEFAULT_EPSILON = 1e-2


@dataclass(kw_only=True)
class EraseConfig:
    concept: str
    preservation: list[str]
    # From the model's profile (see the module docstring).
    sample_steps: int  # the model's default schedule: trajectories for previews and evaluation
    guidance_scale: float
    height: int  # training resolution: the trajectory banks are sampled at this size
    width: int
    erase_batch: int
    preserve_batch: int  # fresh preservation states per step (each also seen the step after)
    trajectories: int  # frozen trajectories per bank
    schedule_steps: list[int] | None = None  # step counts trained over (the ones served); None: [sample_steps]
    anchor: str | None = None
    # Erase target: "esd" = Eq. 5 negative guidance; "anchor" = v(x_t, c_anchor);
    # "strip" = v(x_t, prompt with the concept words removed), which keeps the rest of the scene;
    # "replace" = v(x_t, prompt with the concept replaced by `anchor`): AC's anchor concept in the prompt's context.
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
    # "lagrangian": Eq. 13-15 (a constraint on the rate of L_pr's rise); "level": a constraint on its level,
    # L_pr <= tau * E||v_θ||² on the preservation states (zerase.train.lagrangian.LevelController); "fixed": λ constant.
    modulation: Modulation = "lagrangian"
    fixed_lambda: float = 1.0  # λ when modulation == "fixed"
    tau: float = 0.01  # "level": tolerated L_pr as a share of the frozen preservation outputs' energy
    gating: Gating = "text"  # "all" is the naive LoRA baseline of Fig. 3 (right)
    shuffle_variants: int = 2  # word-order shuffles per erase prompt
    erase_prompts: list[str] = field(default_factory=list)  # extra prompts showing the concept
    # Training data beyond the paper's fixed prompts and frozen bank; all off by default (today's behaviour).
    prompt_pool: int = 0  # > 0: this many base erase prompts (zerase.train.prompt_pool), each with surface variants
    pool_variants: int = 8  # surface variants per base prompt (word order, respellings); one drawn per step
    category: str | None = None  # the pool's templates (a presets.Category value); None: generic ones
    erase_contexts: list[str] = field(default_factory=list)  # pool bases: the model's prompts showing the concept
    pool_templates: float = 0.5  # share of pool prompts from category templates (the rest: erase_contexts)
    perturb: float = 0.25  # share of pool prompts with the concept respelt (never as the evaluation attacks)
    synonyms: list[str] = field(default_factory=list)  # respellings the pool may use as well
    refresh_every: int = 0  # > 0: every this many steps, the erase bank is re-sampled with the current LoRA
    # > 0: ΔW acts only outside the directions holding this share of the preserved prompts' caption-row inputs'
    # energy (zerase.train.null_space); 0: anywhere (the paper).
    null_space: float = 0.0
    # Share of the erase bank's trajectories sampled along the anchor's own path (target "anchor" or "replace"): the
    # erased model is then taught where the anchor goes from every state it will reach, not only from the states of
    # the concept's path, where the anchor's velocity asks for a change the sampler cannot finish ("filled" to
    # "outlined" from an already filled disc). 0: every trajectory on the concept's path (the paper).
    anchor_paths: float = 0.0

    def __post_init__(self) -> None:
        if not self.concept.strip():
            raise ValueError("concept must not be empty")
        if self.target in ("anchor", "replace") and not self.anchor:
            raise ValueError(f"target {self.target!r} needs an anchor prompt")
        if not EPSILON_MIN < self.epsilon <= EPSILON_MAX:
            raise ValueError(f"epsilon must be in ({EPSILON_MIN}, {EPSILON_MAX}]")
        if self.steps < 1 or self.rank < 1:
            raise ValueError("steps and rank must be positive")
        if min(self.erase_batch, self.preserve_batch, self.trajectories, self.height, self.width) < 1:
            raise ValueError("batch sizes, trajectories and the training resolution must be positive")
        if self.tau <= 0 or not (0 <= self.perturb <= 1 and 0 <= self.pool_templates <= 1):
            raise ValueError("tau must be positive, perturb and pool_templates in [0, 1]")
        if self.prompt_pool < 0 or self.refresh_every < 0 or self.pool_variants < 1:
            raise ValueError("prompt_pool and refresh_every must not be negative, pool_variants positive")
        if not 0 <= self.null_space < 1:
            raise ValueError("null_space must be in [0, 1)")
        if not 0 <= self.anchor_paths <= 1:
            raise ValueError("anchor_paths must be in [0, 1]")
        if any(n < 1 for n in self.trained_steps):
            raise ValueError("schedule steps must be positive")

    @property
    def sampling(self) -> SamplingSettings:
        """The model's default schedule at the training resolution."""
        return SamplingSettings(self.sample_steps, self.guidance_scale, self.height, self.width)

    @property
    def trained_steps(self) -> list[int]:
        return list(self.schedule_steps) if self.schedule_steps else [self.sample_steps]

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
