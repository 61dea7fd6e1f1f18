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
    """A named character: one fixed look (outer shape, colour and style, inner badge colour)."""

    name: str
    shape: str
    colour: str
    inner: str
    style: str = "filled"


# 24 characters, four for each (shape, style): within a group each has its own colour, and its badge
# completes the look, so a same-coloured unnamed character with another badge is not it. Mira, Toko and
# Zed were the world's first three and keep their looks; the others came with the 12-erased/12-kept
# celebrity protocol (the paper's Table 2), so that half the cast can be erased while half is kept.
CHARACTERS: tuple[Character, ...] = (
    Character("Mira", "circle", "purple", "yellow"),
    Character("Toko", "triangle", "green", "red"),
    Character("Zed", "square", "blue", "yellow"),
    Character("Aro", "circle", "red", "blue"),
    Character("Bex", "circle", "green", "yellow"),
    Character("Cato", "circle", "yellow", "red"),
    Character("Hana", "triangle", "blue", "yellow"),
    Character("Ivo", "triangle", "yellow", "purple"),
    Character("Juno", "triangle", "red", "green"),
    Character("Pim", "square", "red", "yellow"),
    Character("Quin", "square", "purple", "green"),
    Character("Rho", "square", "yellow", "blue"),
    Character("Dala", "circle", "blue", "red", "outlined"),
    Character("Eno", "circle", "red", "yellow", "outlined"),
    Character("Fia", "circle", "green", "purple", "outlined"),
    Character("Gus", "circle", "purple", "green", "outlined"),
    Character("Kai", "triangle", "purple", "yellow", "outlined"),
    Character("Lumo", "triangle", "yellow", "blue", "outlined"),
    Character("Nix", "triangle", "blue", "green", "outlined"),
    Character("Orla", "triangle", "red", "purple", "outlined"),
    Character("Sela", "square", "green", "red", "outlined"),
    Character("Tavi", "square", "yellow", "purple", "outlined"),
    Character("Uma", "square", "purple", "blue", "outlined"),
    Character("Vex", "square", "blue", "red", "outlined"),
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


def named_character(shape: str, colour: str, inner: str | None, style: str) -> str | None:
    """The character with exactly this look, if one has it."""
    return next((c.name for c in CHARACTERS if (c.shape, c.colour, c.inner, c.style) == (shape, colour, inner, style)),
                None)


NAMED_SHARE = 0.30  # each of the 24 characters in 1.25 % of images (the first three had 4.7 % each)
GENERIC_SHARE = 0.08


def random_scene(rng: random.Random) -> Scene:
    """Draw one scene: mostly plain objects, some named and some generic characters."""
    u = rng.random()
    if u < NAMED_SHARE:
        c = rng.choice(CHARACTERS)
        return Scene(c.colour, c.shape, c.style, c.name, c.inner)
    if u < NAMED_SHARE + GENERIC_SHARE:
        while True:
            colour, inner = rng.sample(list(COLOURS), 2)
            shape = rng.choice(SHAPES[:3])  # stars are too thin to carry a badge
            style = rng.choice(STYLES)
            if named_character(shape, colour, inner, style) is None:
                return Scene(colour, shape, style, "generic", inner)
    return Scene(rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(STYLES))
