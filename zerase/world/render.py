"""Rendering the world's scenes to small RGB images (anti-aliased by 4x supersampling)."""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageDraw

from zerase.world.concepts import COLOURS, Scene

SUPERSAMPLE = 4


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        pts = [(math.pi / 4 + k * math.pi / 2) for k in range(4)]
        radius = [r * 1.0] * 4
    elif shape == "triangle":
        pts = [(-math.pi / 2 + k * 2 * math.pi / 3) for k in range(3)]
        radius = [r * 1.05] * 3
    elif shape == "star":
        pts = [(-math.pi / 2 + k * math.pi / 5) for k in range(10)]
        radius = [r * 1.05 if k % 2 == 0 else r * 0.45 for k in range(10)]
    else:
        raise ValueError(f"not a polygon: {shape}")
    return [(cx + rr * math.cos(a + angle), cy + rr * math.sin(a + angle)) for a, rr in zip(pts, radius)]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float,
                fill: tuple[int, int, int], outline_width: int | None) -> None:
    """Filled when `outline_width` is None, else only the outline."""
    if shape == "circle":
        box = (cx - r, cy - r, cx + r, cy + r)
        if outline_width is None:
            draw.ellipse(box, fill=fill)
        else:
            draw.ellipse(box, outline=fill, width=outline_width)
        return
    pts = _polygon(shape, cx, cy, r, 0.0)
    if outline_width is None:
        draw.polygon(pts, fill=fill)
    else:
        draw.line([*pts, pts[0], pts[1]], fill=fill, width=outline_width, joint="curve")


def render(scene: Scene, rng: random.Random, size: int = 32) -> np.ndarray:
    """Render a scene as an (H, W, 3) uint8 array on a random grey background."""
    big = size * SUPERSAMPLE
    grey = rng.uniform(0.08, 0.92)
    top = np.clip(grey + rng.uniform(-0.08, 0.08), 0, 1)
    # Vertical grey gradient: varied backgrounds that never carry a colour of their own.
    ramp = np.linspace(top, grey, big, dtype=np.float32)[:, None, None] * 255
    canvas = np.broadcast_to(ramp, (big, big, 3)).astype(np.uint8)
    img = Image.fromarray(canvas.copy())
    draw = ImageDraw.Draw(img)

    r = rng.uniform(0.28, 0.40) * big
    margin = r * 1.05 + SUPERSAMPLE
    cx = rng.uniform(margin, big - margin)
    cy = rng.uniform(margin, big - margin)
    colour = _jitter(COLOURS[scene.colour], rng)
    outline = None if scene.style == "filled" else int(0.11 * big)
    _draw_shape(draw, scene.shape, cx, cy, r, colour, outline)
    if scene.inner is not None:
        _draw_shape(draw, scene.shape, cx, cy + (0.1 * r if scene.shape == "triangle" else 0), r * 0.45,
                    _jitter(COLOURS[scene.inner], rng), None)
    return np.asarray(img.resize((size, size), Image.Resampling.LANCZOS))


def render_background(rng: random.Random, size: int = 32) -> np.ndarray:
    """A background with no object: the probe's "none" examples."""
    grey = rng.uniform(0.08, 0.92)
    return np.full((size, size, 3), int(grey * 255), dtype=np.uint8)


def _jitter(rgb: tuple[int, int, int], rng: random.Random) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.randint(-15, 15), 0, 255)) for c in rgb)  # type: ignore[return-value]
