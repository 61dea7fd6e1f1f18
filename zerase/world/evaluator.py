"""The bundled world's evaluator: its concept probe reads the images, its prompts and synonyms make the plan.

Readings are the probe's labels without "none" ({"red", "circle", "filled"}, {"Mira", ...}); the
world's values are distinct across axes, so a bare label says which concept it is.

Coherence: an image is a clean world object when the probe reads a colour, a shape and a style (not
"none" on any of the three) each with probability >= COHERENCE_CONFIDENCE, and the world's renderer,
drawing what the probe read, explains at least COHERENCE_FIT of the image's object (zerase.world.coherence:
the probe alone called garbled blobs clean). A character is not required (most objects have none). An
erasure into "another clean object" keeps coherence; into mush, it drops.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from zerase.evaluate.plan import ConceptPrompts, Evaluator, Plan, attack_prompts, standard_plan
from zerase.world.coherence import fit
from zerase.world.concepts import AXES, COLOURS, SHAPES, object_prompt, short_prompts
from zerase.world.probe import HEADS, NONE, OBJECT_AXES, ConceptProbe
from zerase.world.profile import world_axis, world_value

COHERENCE_CONFIDENCE = 0.5
# The base model's own images of every world concept pass at >= 0.88 (mean 0.97, 8 seeds per prompt); a
# demo Mira erasure's smeared images passed at 0.31 (the probe's confidence alone: 0.88).
COHERENCE_FIT = 0.5
COHERENCE_METRIC = "probe+render-fit"  # recorded with results, so figures from the probe alone are told apart
# Recorded with results likewise: figures from the composed prompts alone (before the short forms) are told apart.
EVALUATION_PROMPTS = "short+composed"

SYNONYMS = {
    "red": ["crimson", "scarlet"], "yellow": ["golden", "lemon"], "green": ["emerald", "lime"],
    "blue": ["azure", "navy"], "purple": ["violet", "lilac"], "circle": ["disc", "ring"],
    "square": ["box", "block"], "triangle": ["pyramid", "wedge"], "star": ["pentagram", "starfish"],
    "filled": ["solid", "full"], "outlined": ["hollow", "contour"],
}


def concept_prompts(axis: str, value: str) -> ConceptPrompts:
    """Prompts whose images must show `value` on `axis`: the short form the world was trained on ("a blue
    shape", "a square", "an outlined circle") and the value composed with the other axes. The short form first:
    an evaluation of composed prompts alone said 0.00 of a square erasure that still drew "a square" in 2 of 8."""
    if axis == "colour":
        prompts = short_prompts(axis, value) + [object_prompt(value, s) for s in SHAPES]
    elif axis == "shape":
        prompts = short_prompts(axis, value) + [object_prompt(c, value) for c in COLOURS]
    elif axis == "style":
        prompts = short_prompts(axis, value) + [object_prompt(c, s, value) for c, s in zip(COLOURS, SHAPES)]
    else:
        prompts = [value, f"a picture of {value}"]
    return ConceptPrompts(axis, value, prompts)


def world_concepts() -> list[ConceptPrompts]:
    """Every concept of the world with its prompts, axis by axis."""
    return [concept_prompts(a, v) for a, values in AXES.items() for v in values]


def world_attack_prompts(concept: str, seed: int = 0) -> dict[str, list[str]]:
    """Attack prompts on a world concept (a concept outside the world is attacked on its own name)."""
    axis = world_axis(concept)
    value = world_value(concept)
    base = concept_prompts(axis, value).prompts if axis else [concept]
    return attack_prompts(value, base, SYNONYMS.get(value.lower(), ()), seed)


def probe_readings(labels: Sequence[Mapping[str, str]]) -> list[set[str]]:
    """Probe labels as readings: the values the probe sees, "none" left out."""
    return [{v for v in lab.values() if v != NONE} for lab in labels]


class ProbeEvaluator(Evaluator):
    def __init__(self, probe: ConceptProbe) -> None:
        self.probe = probe

    @classmethod
    def load(cls, probe_dir: Path) -> ProbeEvaluator:
        return cls(ConceptProbe.load(probe_dir))

    def can_read(self, concept: str) -> bool:
        return world_axis(concept) is not None

    def read(self, images: np.ndarray, prompts: Sequence[str]) -> list[set[str]]:
        return probe_readings(self.probe.classify(images)) if len(images) else []

    def coherent(self, images: np.ndarray, prompts: Sequence[str]) -> list[bool] | None:
        if not len(images):
            return []
        probs = self.probe.probabilities(images)
        ok = np.ones(len(images), dtype=bool)
        for axis in OBJECT_AXES:
            p = probs[axis]
            ok &= (p.argmax(-1) != HEADS[axis].index(NONE)) & (p.max(-1) >= COHERENCE_CONFIDENCE)
        ok &= fit(images, self.probe.heads(probs)) >= COHERENCE_FIT
        return ok.tolist()

    def plan(self, concept: str, n_seeds: int, full: bool, *, category: str | None = None,
             preservation: Sequence[str] = (), anchor: str | None = None) -> Plan:
        # The job's context (zerase.evaluate.evaluators) is ignored: the world's own concepts make the plan.
        axis = world_axis(concept)
        if axis is None:
            raise ValueError(f"{concept!r} is not a concept of the bundled world: no probe can read it")
        erased = concept_prompts(axis, world_value(concept))
        others = [c for c in world_concepts() if (c.axis, c.value) != (erased.axis, erased.value)]
        return standard_plan(erased, others, world_attack_prompts(erased.value), n_seeds, full)
