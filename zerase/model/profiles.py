"""Model profiles: what the core asks of the loaded model directory, beyond its weights.

A profile gives the model's sampling and training defaults, the step counts it serves, the presets
that know its concepts (erase prompts, default preservation, anchor) and the evaluator that can read
its images. The core never names an implementation: `profile_for(model_dir)` finds it from the
directory. A directory with a `zerase-profile.json` names its plug-in (the bundled tiny world writes
one); a diffusers Z-Image directory is recognised by its scheduler's shift, which its checkpoint fixes
(Turbo 3.0, the non-distilled Z-Image 6.0); anything else gets the pipeline's own call defaults and a
warning saying so. Looking a profile up imports no torch.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Sequence
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from zerase.model.captions import CaptionTokens
from zerase.model.sampling import SamplingSettings, TrainingDefaults

if TYPE_CHECKING:
    from zerase.evaluate.plan import Evaluator

BUNDLED_MODEL_DIR = Path(__file__).parent.parent / "assets" / "tiny-world"
PROFILE_FILE = "zerase-profile.json"  # {"plugin": "package.module:Class"}

log = logging.getLogger(__name__)


class ModelProfile:
    """The defaults of a model no plug-in knows more about; plug-ins override what they know."""

    name = "model"

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir

    @property
    def sampling(self) -> SamplingSettings:
        """How the model samples when a request names nothing (steps, guidance, size)."""
        raise NotImplementedError

    @property
    def training(self) -> TrainingDefaults:
        """What an erasure trains on when the request names nothing."""
        raise NotImplementedError

    @property
    def served_steps(self) -> tuple[int, ...]:
        """The step counts /generate serves. A patch has only seen the timesteps of the schedules it was
        trained on, so training samples trajectories over exactly these, and nothing else is served."""
        return (self.sampling.steps,)

    def erase_prompts(self, concept: str) -> list[str]:
        """Prompts of this model's world that show `concept` (none: the concept's own templates)."""
        return []

    def erase_contexts(self, concept: str) -> list[str]:
        """Many prompts of this model's world that show `concept`, bases of a resampled erase-prompt pool
        (EraseConfig.erase_contexts; none: the category templates and `erase_prompts`)."""
        return []

    def default_preservation(self, concept: str, category: str) -> list[str] | None:
        """What to keep when the request names nothing; None: the category's generic set."""
        return None

    def expand_preservation(self, item: str) -> list[str]:
        """A preservation entry as the prompts that show it (a bare concept in its contexts)."""
        return [item]

    def default_anchor(self, concept: str, category: str) -> str | None:
        """What the concept turns into when the request names nothing; None: the category's anchor."""
        return None

    def default_target(self, concept: str, category: str) -> str | None:
        """How an erasure uses `default_anchor` (an EraseConfig.target): "anchor", the anchor prompt's output, or
        "replace", the prompt with the concept replaced by the anchor word; None: "anchor"."""
        return None

    def evaluator(self) -> Evaluator | None:
        """The evaluator that can read this model's images, if any."""
        return None

    @cached_property
    def captions(self) -> CaptionTokens:
        """Counts prompts' tokens as the pipeline encodes them (no torch)."""
        return CaptionTokens(self.model_dir / "tokenizer")

    def preview_prompts(self, concept: str, preservation: Sequence[str], n_preserved: int = 3) -> list[str]:
        """The concept in a prompt that shows it, then preserved prompts spread over the preservation set."""
        shown = self.erase_prompts(concept)
        n = min(n_preserved, len(preservation))
        return [shown[0] if shown else concept] + [preservation[i * len(preservation) // n] for i in range(n)]


class ZImageTurboProfile(ModelProfile):
    """Z-Image Turbo as its model card samples it: 1024 px, no classifier-free guidance, and 8 steps.

    The card says `num_inference_steps=9` for diffusers < 0.39; diffusers PR 13730 (0.39) dropped the
    redundant terminal timestep of `get_default_z_image_sigmas`, so the same schedule is now 8 steps
    (the PR's own comparison: 8 after == 9 before). Training runs at 512 px, as the paper's authors
    train: the gate acts on caption rows, so it carries to any serving size. The batch fits 24 GB in
    bf16 with gradient checkpointing (README, "Z-Image Turbo").
    """

    name = "z-image-turbo"

    @property
    def sampling(self) -> SamplingSettings:
        return SamplingSettings(steps=8, guidance_scale=0.0, height=1024, width=1024)

    @property
    def training(self) -> TrainingDefaults:
        return TrainingDefaults(height=512, width=512, erase_batch=4, preserve_batch=2, trajectories=16)


class ZImageProfile(ModelProfile):
    """The non-distilled Z-Image, as its model card samples it: 50 steps, guidance 4, 1024 px."""

    name = "z-image"

    @property
    def sampling(self) -> SamplingSettings:
        return SamplingSettings(steps=50, guidance_scale=4.0, height=1024, width=1024)

    @property
    def training(self) -> TrainingDefaults:
        return TrainingDefaults(height=512, width=512, erase_batch=4, preserve_batch=2, trajectories=8)


class UnknownZImageProfile(ZImageProfile):
    """A Z-Image directory no profile knows: ZImagePipeline's own call defaults, said out loud (and the
    non-distilled model's training defaults)."""

    name = "z-image-unknown"

    def __init__(self, model_dir: Path) -> None:
        super().__init__(model_dir)
        log.warning("%s: no model profile recognises this directory (no %s, scheduler shift not 3.0 or 6.0); "
                    "using ZImagePipeline's call defaults: %s", model_dir, PROFILE_FILE, self.sampling)

    @property
    def sampling(self) -> SamplingSettings:
        return SamplingSettings(steps=50, guidance_scale=5.0, height=1024, width=1024)


# The scheduler shift each checkpoint ships (scheduler/scheduler_config.json of Tongyi-MAI/Z-Image-Turbo and
# Tongyi-MAI/Z-Image on Hugging Face).
SHIFT_PROFILES: dict[float, type[ModelProfile]] = {3.0: ZImageTurboProfile, 6.0: ZImageProfile}


def _recognised(model_dir: Path) -> type[ModelProfile]:
    try:
        scheduler = json.loads((model_dir / "scheduler" / "scheduler_config.json").read_text())
    except (OSError, ValueError):
        return UnknownZImageProfile
    if scheduler.get("use_dynamic_shifting"):
        return UnknownZImageProfile
    return SHIFT_PROFILES.get(float(scheduler.get("shift", 1.0)), UnknownZImageProfile)


@lru_cache(maxsize=16)
def _profile_for(model_dir: Path) -> ModelProfile:
    declared = model_dir / PROFILE_FILE
    if not declared.exists():
        return _recognised(model_dir)(model_dir)
    module_name, _, class_name = json.loads(declared.read_text())["plugin"].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, ModelProfile)):
        raise TypeError(f"{declared}: {module_name}:{class_name} is not a ModelProfile")
    return cls(model_dir)


def profile_for(model_dir: str | Path | None = None) -> ModelProfile:
    """The profile of the model in `model_dir` (None: the bundled tiny model), one per directory."""
    return _profile_for(Path(model_dir).resolve() if model_dir else BUNDLED_MODEL_DIR)
