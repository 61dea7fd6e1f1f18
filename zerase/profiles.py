"""Model profiles: what the core asks of the loaded model directory, beyond its weights.

A profile gives the model's sampling defaults, the presets that know its concepts (erase prompts,
default preservation, anchor) and the evaluator that can read its images. The core never names an
implementation: `profile_for(model_dir)` finds it from the directory. A directory with a
`zerase-profile.json` names its plug-in (the bundled tiny world writes one); any other diffusers
Z-Image directory gets `ZImageTurboProfile`. Looking a profile up imports no torch.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from zerase.captions import CaptionTokens
from zerase.sampling import SamplingSettings

if TYPE_CHECKING:
    from zerase.evaluation import Evaluator

BUNDLED_MODEL_DIR = Path(__file__).parent / "assets" / "tiny-world"
PROFILE_FILE = "zerase-profile.json"  # {"plugin": "package.module:Class"}


class ModelProfile:
    """The defaults of a model no plug-in knows more about; plug-ins override what they know."""

    name = "z-image"

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir

    @property
    def sampling(self) -> SamplingSettings:
        raise NotImplementedError

    def erase_prompts(self, concept: str) -> list[str]:
        """Prompts of this model's world that show `concept` (none: the concept's own templates)."""
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
    """Z-Image Turbo, as its model card samples it: 9 steps, no classifier-free guidance, 1024 px."""

    name = "z-image-turbo"

    @property
    def sampling(self) -> SamplingSettings:
        return SamplingSettings(steps=9, guidance_scale=0.0, height=1024, width=1024)


@lru_cache(maxsize=16)
def _profile_for(model_dir: Path) -> ModelProfile:
    declared = model_dir / PROFILE_FILE
    if not declared.exists():
        return ZImageTurboProfile(model_dir)
    module_name, _, class_name = json.loads(declared.read_text())["plugin"].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, ModelProfile)):
        raise TypeError(f"{declared}: {module_name}:{class_name} is not a ModelProfile")
    return cls(model_dir)


def profile_for(model_dir: str | Path | None = None) -> ModelProfile:
    """The profile of the model in `model_dir` (None: the bundled tiny model), one per directory."""
    return _profile_for(Path(model_dir).resolve() if model_dir else BUNDLED_MODEL_DIR)
