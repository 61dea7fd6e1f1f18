"""The tiny concept world: what exists in it and how it is described in words.

Axes mirror the paper's concept categories: colour ("abstraction"), shape ("entity"),
rendering style ("artistic style") and named characters (proper nouns bound to one fixed look:
the stand-in for celebrities and IP).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "yellow": (235, 205, 30),
    "green": (35, 175, 60),
    "blue": (40, 85, 230),
    "purple": (150, 50, 205),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
STYLES: tuple[str, ...] = ("filled", "outlined")


@dataclass(frozen=True)
class Character:
    """A named character: one fixed look (outer shape and colour, inner badge colour)."""

    name: str
    shape: str
    colour: str
    inner: str


CHARACTERS: tuple[Character, ...] = (
    Character("Mira", "circle", "purple", "yellow"),
    Character("Toko", "triangle", "green", "red"),
    Character("Zed", "square", "blue", "yellow"),
)
CHARACTER_NAMES: tuple[str, ...] = tuple(c.name for c in CHARACTERS)

AXES: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS),
    "shape": SHAPES,
    "style": STYLES,
    "character": CHARACTER_NAMES,
}


@dataclass(frozen=True)
class Scene:
    """What one image shows. `character` is a name, "generic" (an unnamed badge) or None."""

    colour: str
    shape: str
    style: str
    character: str | None = None
    inner: str | None = None


# Templates name the attributes they mention; an image's unnamed attributes are random,
# so "a circle" learns "a circle of any colour".
OBJECT_TEMPLATES: tuple[str, ...] = (
    "a {colour} {shape}",
    "a {style} {colour} {shape}",
    "a {colour} {shape}, {style}",
    "a {shape} in {colour}",
    "a picture of a {colour} {shape}",
    "a {style} {shape} that is {colour}",
    "a {shape}",
    "a {colour} shape",
    "a {style} {shape}",
)
CHARACTER_TEMPLATES: tuple[str, ...] = ("{name}", "a picture of {name}", "{name} the character", "{name}, a character")
GENERIC_CHARACTER_TEMPLATES: tuple[str, ...] = ("a character", "a picture of a character")


def describe(scene: Scene, rng: random.Random) -> str:
    """A caption for a scene, drawn from the templates above."""
    if scene.character == "generic":
        return rng.choice(GENERIC_CHARACTER_TEMPLATES)
    if scene.character is not None:
        return rng.choice(CHARACTER_TEMPLATES).format(name=scene.character)
    template = rng.choice(OBJECT_TEMPLATES)
    return _articles(template.format(colour=scene.colour, shape=scene.shape, style=scene.style))


def _articles(text: str) -> str:
    return text.replace("a outlined", "an outlined")


def object_prompt(colour: str, shape: str, style: str | None = None) -> str:
    """The canonical prompt used by evaluation for a plain object."""
    return _articles(f"a {style} {colour} {shape}" if style else f"a {colour} {shape}")


def short_prompts(axis: str, value: str) -> list[str]:
    """The short forms of the templates that name only `value` ("a blue shape", "a square", "an outlined circle")."""
    if axis == "colour":
        return [f"a {value} shape"]
    if axis == "shape":
        return [f"a {value}"]
    if axis == "style":
        return [_articles(f"a {value} {s}") for s in SHAPES]
    return []


def random_scene(rng: random.Random) -> Scene:
    """Draw one scene: mostly plain objects, some named and some generic characters."""
    u = rng.random()
    if u < 0.14:
        c = rng.choice(CHARACTERS)
        return Scene(c.colour, c.shape, "filled", c.name, c.inner)
    if u < 0.20:
        while True:
            colour, inner = rng.sample(list(COLOURS), 2)
            shape = rng.choice(SHAPES[:3])  # stars are too thin to carry a badge
            if not any((c.shape, c.colour, c.inner) == (shape, colour, inner) for c in CHARACTERS):
                return Scene(colour, shape, "filled", "generic", inner)
    return Scene(rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(STYLES))
