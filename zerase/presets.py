"""Category presets: what a takedown request leaves unsaid.

ε per the paper's Table 6; celebrities map to the anchor "a person" (Table 9); default
preservation sets cover the concept's *siblings*, because a sibling left out of the set is
erased along with the concept (a trial erased "yellow" together with "red"). On the bundled
world the siblings are the other values of the concept's axis; for real models they are the
paper's curated lists (Table 7 concepts, Table 9 retention identities).
"""

from __future__ import annotations

from typing import Any

from zerase.config import EraseConfig
from zerase.world.concepts import AXES, CHARACTER_NAMES, COLOURS, SHAPES, STYLES, object_prompt

CATEGORIES = ("nudity", "violence", "artistic_style", "entity", "abstraction", "celebrity", "custom")

EPSILON = {  # Table 6
    "nudity": 1e-3, "violence": 1e-3, "artistic_style": 1e-3,
    "entity": 1e-2, "abstraction": 1e-2, "celebrity": 1e-2, "custom": 5e-3,
}

GENERIC_PRESERVATION = ["a photo of a dog", "a city street at night", "a bowl of fruit on a table",
                        "a portrait of a woman", "a mountain landscape"]
REAL_PRESERVATION = {  # Table 7 and Table 9 (retention group), paraphrased as prompts
    "entity": [f"a photo of a {e}" for e in ("church", "car", "airplane", "tower", "pizza", "cat", "shoes")],
    "artistic_style": [f"an art in the style of {a}" for a in
                       ("Claude Monet", "Pablo Picasso", "Rembrandt van Rijn", "Edvard Munch", "Frida Kahlo")],
    "abstraction": [f"a close scene of {a}" for a in ("a hug", "a kiss", "an explosion", "origami", "time")],
    "celebrity": [f"a photo of {p}" for p in ("Albert Einstein", "Lionel Messi", "Morgan Freeman",
                                               "Serena Williams", "Tom Cruise", "Angela Merkel")],
    "nudity": ["a person wearing clothes", "a portrait of a man", "a portrait of a woman", "people at a beach"],
    "violence": ["people shaking hands", "a peaceful protest", "a boxing poster", "a kitchen knife on a table"],
    "custom": [],
}
ANCHORS = {"celebrity": "a person"}
WORLD_GENERIC = ["a character", "a filled shape", "an outlined shape"]


def world_axis(concept: str) -> str | None:
    """The bundled world's axis a concept belongs to, if any."""
    for axis, values in AXES.items():
        if concept.lower() in (v.lower() for v in values):
            return axis
    return None


def world_preservation(concept: str) -> list[str]:
    """Siblings on the concept's axis, in context, plus prompts from the other axes."""
    axis = world_axis(concept)
    c = concept.lower()
    if axis == "colour":
        return [object_prompt(o, s) for o in COLOURS if o != c for s in SHAPES[:2]] + list(CHARACTER_NAMES)
    if axis == "shape":
        return [object_prompt(col, o) for o in SHAPES if o != c for col in list(COLOURS)[:3]] + list(CHARACTER_NAMES)
    if axis == "style":
        return [object_prompt(col, s, st) for st in STYLES if st != c for col in list(COLOURS)[:2]
                for s in SHAPES[:2]] + [object_prompt(col, s) for col in list(COLOURS)[2:] for s in SHAPES[2:]]
    if axis == "character":
        return [n for n in CHARACTER_NAMES if n.lower() != c] + [object_prompt(col, s) for col, s in
                                                                  zip(COLOURS, SHAPES)] + ["a character"]
    return []


def world_erase_prompts(concept: str) -> list[str]:
    """Prompts of the bundled world that show the concept."""
    axis = world_axis(concept)
    c = concept.lower()
    if axis == "colour":
        return [object_prompt(c, s) for s in SHAPES] + [f"a {c} shape"]
    if axis == "shape":
        return [object_prompt(col, c) for col in COLOURS] + [f"a {c}"]
    if axis == "style":
        return [object_prompt(col, s, c) for col in COLOURS for s in SHAPES[:2]]
    if axis == "character":
        name = next(n for n in CHARACTER_NAMES if n.lower() == c)
        return [name, f"a picture of {name}", f"{name} the character"]
    return []


def resolve(concept: str, category: str, preservation: list[str] | None = None, anchor: str | None = None,
            epsilon: float | None = None, **overrides: Any) -> EraseConfig:
    """An EraseConfig for a takedown request: explicit values win, the category fills the rest."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; one of {', '.join(CATEGORIES)}")
    concept = concept.strip()
    in_world = world_axis(concept) is not None
    if preservation is None:
        preservation = world_preservation(concept) if in_world else REAL_PRESERVATION[category] + GENERIC_PRESERVATION
    else:  # a bare world concept ("blue") is preserved in the contexts that show it
        preservation = list(dict.fromkeys(
            p for item in preservation for p in ([item] + (world_erase_prompts(item) if world_axis(item) else []))))
    if anchor is None:
        anchor = "a character" if world_axis(concept) == "character" else ANCHORS.get(category)
    if "target" not in overrides and anchor:
        overrides["target"] = "anchor"
    if "erase_prompts" not in overrides and in_world:
        overrides["erase_prompts"] = world_erase_prompts(concept)
    return EraseConfig(concept=concept, preservation=list(preservation), anchor=anchor,
                       epsilon=EPSILON[category] if epsilon is None else epsilon, **overrides)
