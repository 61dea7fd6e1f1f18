"""The bundled tiny world as a model plug-in: its sampling, its concepts' prompts and its probe.

Found by `zerase.model.profiles.profile_for` from the `zerase-profile.json` that `zerase world build`
writes; nothing outside zerase/world/ names it.
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import TYPE_CHECKING

from zerase.model.profiles import ModelProfile
from zerase.model.sampling import SamplingSettings, TrainingDefaults
from zerase.world.concepts import (
    AXES,
    CHARACTER_NAMES,
    CHARACTER_TEMPLATES,
    CHARACTERS,
    COLOURS,
    OBJECT_TEMPLATES,
    SHAPES,
    STYLES,
    _articles,
    object_prompt,
    short_prompts,
)

if TYPE_CHECKING:
    from zerase.evaluate.plan import Evaluator


def world_axis(concept: str) -> str | None:
    """The world's axis a concept belongs to, if any."""
    for axis, values in AXES.items():
        if concept.lower() in (v.lower() for v in values):
            return axis
    return None


# The preset a moderator asks for, per axis (the world's concepts as the paper's Table 7 kinds).
AXIS_CATEGORY = {"colour": "abstraction", "shape": "entity", "style": "artistic_style", "character": "celebrity"}


def world_category(concept: str, default: str = "entity") -> str:
    """The category a takedown of `concept` is requested with (`default` for a concept the world lacks)."""
    return AXIS_CATEGORY.get(world_axis(concept) or "", default)


def world_value(concept: str) -> str:
    """The world's spelling of a concept ("mira" -> "Mira"); the concept itself if it is not one."""
    return next((v for values in AXES.values() for v in values if v.lower() == concept.lower()), concept)


def world_preservation(concept: str) -> list[str]:
    """Siblings on the concept's axis, in context, plus prompts from the other axes: a sibling left out
    of the set is erased along with the concept (a trial erased "yellow" together with "red"), and the
    characters, drawn with a colour, a shape and a style each (an "outlined" erasure that left them out took Zed)."""
    axis = world_axis(concept)
    c = concept.lower()
    if axis == "colour":
        return [object_prompt(o, s) for o in COLOURS if o != c for s in SHAPES[:2]] + list(CHARACTER_NAMES)
    if axis == "shape":
        return [object_prompt(col, o) for o in SHAPES if o != c for col in list(COLOURS)[:3]] + list(CHARACTER_NAMES)
    if axis == "style":
        return [object_prompt(col, s, st) for st in STYLES if st != c for col in list(COLOURS)[:2]
                for s in SHAPES[:2]] + [object_prompt(col, s) for col in list(COLOURS)[2:] for s in SHAPES[2:]] \
            + list(CHARACTER_NAMES)
    if axis == "character":
        return [n for n in CHARACTER_NAMES if n.lower() != c] + [object_prompt(col, s) for col, s in
                                                                  zip(COLOURS, SHAPES)] + ["a character"]
    return []


def character_anchor(name: str) -> str:
    """What a character's erasure draws instead: its own colour and shape, without the badge that makes it the
    character ("Kai" -> "a purple triangle"), as the paper turns a celebrity into "a person". The world's generic
    "a character" is no one look, and the model draws it as a smear: erased towards it, Kai was still drawn in 0.56 of
    its images and only 0.69 of them were a clean object; towards its plain look, 0.00 and 1.00 (Eno: 0.31 and 0.44;
    0.00 and 1.00), with no attack left (benchmarks/RESULTS.md, "Anchors")."""
    look = next(c for c in CHARACTERS if c.name.lower() == name.lower())
    return object_prompt(look.colour, look.shape)


SIBLING_AXES = ("colour", "shape", "style")  # whose erasure draws the axis's next value (`sibling`) in its place


def sibling(concept: str) -> str:
    """What a colour's, shape's or style's erasure draws instead, in the prompt's own context: the next value of its
    axis ("a red star" -> "a yellow star", "a red circle" -> "a red square", "an outlined star" -> "a filled star"),
    as AC erases towards an anchor concept. Negative guidance (Eq. 5) pushed "circle" into smears, coherence 0.79,
    and left it in 0.81 of its images; towards "square", 0.21 and 0.98 (outlined: 0.72 and 0.30; towards "filled",
    0.33 and 0.84), the kept concepts' drop lower too (benchmarks/RESULTS.md, "Anchors"). A colour, as served: by
    Eq. 5, coherence 0.72 and a 0.02 drop (routed to "a red star", it took the star too); towards the next colour,
    0.95 and 0.001 (3 training seeds, "Erasure quality")."""
    values = AXES[world_axis(concept) or ""]
    i = [v.lower() for v in values].index(concept.lower())
    return values[(i + 1) % len(values)]


def world_erase_prompts(concept: str) -> list[str]:
    """Prompts of the world that show the concept."""
    axis = world_axis(concept)
    c = concept.lower()
    if axis == "colour":
        return [object_prompt(c, s) for s in SHAPES] + short_prompts(axis, c)
    if axis == "shape":
        return [object_prompt(col, c) for col in COLOURS] + short_prompts(axis, c)
    if axis == "style":
        return [object_prompt(col, s, c) for col in COLOURS for s in SHAPES[:2]]
    if axis == "character":
        name = world_value(concept)
        return [name, f"a picture of {name}", f"{name} the character"]
    return []


def world_erase_contexts(concept: str) -> list[str]:
    """Every caption of the world's templates that names the concept (the other attributes in turn):
    37 for a colour, 48 for a shape, 64 for a style, 4 for a character."""
    axis = world_axis(concept)
    if axis == "character":
        return [t.format(name=world_value(concept)) for t in CHARACTER_TEMPLATES]
    if axis is None:
        return []
    slot = {"colour": "{colour}", "shape": "{shape}", "style": "{style}"}[axis]
    out: list[str] = []
    for template in (t for t in OBJECT_TEMPLATES if slot in t):
        for colour in COLOURS:
            for shape in SHAPES:
                for style in STYLES:
                    values = {"colour": colour, "shape": shape, "style": style} | {axis: concept.lower()}
                    out.append(_articles(template.format(**values)))
    return list(dict.fromkeys(out))


class WorldProfile(ModelProfile):
    name = "tiny-world"

    @cached_property
    def sampling(self) -> SamplingSettings:  # type: ignore[override]
        return SamplingSettings(**json.loads((self.model_dir / "world.json").read_text())["sampling"])

    @property
    def training(self) -> TrainingDefaults:
        # The world's images are tiny: train at the size it serves, with the batches its benchmarks used.
        return TrainingDefaults(height=self.sampling.height, width=self.sampling.width, erase_batch=8,
                                preserve_batch=8, trajectories=32)

    def erase_prompts(self, concept: str) -> list[str]:
        return world_erase_prompts(concept)

    def erase_contexts(self, concept: str) -> list[str]:
        return world_erase_contexts(concept)

    def default_preservation(self, concept: str, category: str) -> list[str] | None:
        return world_preservation(concept) if world_axis(concept) else None

    def expand_preservation(self, item: str) -> list[str]:
        # A bare world concept ("blue") is preserved in the contexts that show it.
        return [item, *world_erase_prompts(item)]

    def default_anchor(self, concept: str, category: str) -> str | None:
        axis = world_axis(concept)
        if axis == "character":
            return character_anchor(concept)
        return sibling(concept) if axis in SIBLING_AXES else None

    def default_target(self, concept: str, category: str) -> str | None:
        return "replace" if world_axis(concept) in SIBLING_AXES else None

    _evaluator: Evaluator | None = None

    def evaluator(self) -> Evaluator | None:
        # Asked for per job: the probe loads once per profile (profile_for keeps one per directory). A
        # missing probe is not remembered, so one added later is found (and a broken one fails each job).
        if self._evaluator is None and (self.model_dir / "probe" / "labels.json").exists():
            from zerase.world.evaluator import ProbeEvaluator

            self._evaluator = ProbeEvaluator.load(self.model_dir / "probe")
        return self._evaluator
