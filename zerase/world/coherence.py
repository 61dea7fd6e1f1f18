"""Coherence by render-and-compare: does the image look like the clean object the probe says it shows?

The probe is a classifier: it names the likeliest colour, shape and style even for a garbled blob, and
often confidently (a Mira erasure's smeared images read as "a filled purple square" at p > 0.9). So the
reading is checked against the image itself: the world's renderer draws what the probe read, at every
integer position and a few sizes, over the image's own background (a vertical grey ramp fitted on its
border), and the best fit's share of the object's energy it explains is the image's `fit`. A clean
object is explained almost entirely; a blob of the right colours is not.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from zerase.world.concepts import CHARACTERS, COLOURS, SHAPES
from zerase.world.render import SUPERSAMPLE, _draw_shape

# Radii the renderer draws, as a share of the image side (render.render: 0.28..0.40).
RADII = (0.28, 0.31, 0.34, 0.37, 0.40)
BORDER = 2  # pixels of each edge that show only background (render.render keeps objects off them)
CENTRES = (0.22, 0.78)  # where an object's centre may be, as a share of the side (render.render: 0.29..0.71)


@lru_cache(maxsize=256)
def _template(shape: str, style: str, colour: str, inner: str | None, r_share: float,
              size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The object alone, centred on a (2·size)² canvas: premultiplied colour (3, 2s, 2s) in [0, 1] and
    coverage (1, 2s, 2s), anti-aliased as render.render does."""
    big = 2 * size * SUPERSAMPLE
    c = big / 2
    r = r_share * size * SUPERSAMPLE
    layers = []
    for fill in ((255, 255, 255), None):
        img = Image.new("RGB", (big, big))
        draw = ImageDraw.Draw(img)
        outline = None if style == "filled" else int(0.11 * size * SUPERSAMPLE)
        _draw_shape(draw, shape, c, c, r, fill or COLOURS[colour], outline)
        if inner is not None:
            dy = 0.1 * r if shape == "triangle" else 0
            _draw_shape(draw, shape, c, c + dy, r * 0.45, (255, 255, 255) if fill else COLOURS[inner], None)
        layers.append(np.asarray(img.resize((2 * size, 2 * size), Image.Resampling.BOX), np.float32) / 255)
    coverage = torch.from_numpy(layers[0][..., :1]).permute(2, 0, 1)
    return torch.from_numpy(layers[1]).permute(2, 0, 1), coverage


def background(images: torch.Tensor) -> torch.Tensor:
    """The grey vertical ramp behind each image, fitted on its left and right border columns.

    images: (N, 3, H, W) in [0, 1]; returns the same shape."""
    n, _, h, w = images.shape
    border = torch.cat([images[..., :BORDER], images[..., w - BORDER:]], -1).mean((1, 3))  # (N, H)
    y = torch.linspace(-1, 1, h, dtype=images.dtype)
    design = torch.stack([torch.ones(h, dtype=images.dtype), y], 1)  # a line in y: the renderer's ramp
    coef = torch.linalg.lstsq(design.expand(n, h, 2), border.unsqueeze(-1)).solution  # (N, 2, 1)
    ramp = (design @ coef).squeeze(-1)  # (N, H)
    return ramp[:, None, :, None].expand(n, 3, h, w)


def fit(images: np.ndarray, readings: Sequence[Mapping[str, str]]) -> np.ndarray:
    """For each image, the share of its object's energy (distance from background) that the best-placed
    rendering of its reading explains: 1 is a perfect match, 0 no better than the background alone.

    readings: per image, the probe's heads ({"colour", "shape", "style", "badge"}) or its report ({...,
    "character"}), "none" where it saw nothing; an image whose reading has no object gets 0."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).double() / 255
    bg = background(x)
    out = np.zeros(len(x))
    groups: dict[tuple[str, str, str, str | None], list[int]] = {}
    for i, reading in enumerate(readings):
        look = _look(reading)
        if look is not None:
            groups.setdefault(look, []).append(i)
    for look, idx in groups.items():
        energy = ((x[idx] - bg[idx]) ** 2).sum((1, 2, 3))
        # The best candidate's squared error: the least of its look-dependent terms, plus the object's energy.
        best = torch.stack([_least_error_terms(x[idx], bg[idx], look, r) for r in RADII]).min(0).values + energy
        out[idx] = (1 - best / energy.clamp_min(1e-6)).clamp_min(0).numpy()
    return out


def _look(reading: Mapping[str, str]) -> tuple[str, str, str, str | None] | None:
    """(shape, style, colour, badge colour) to draw for a reading: the probe's heads (with "badge") or its
    report, where a named character is drawn as itself."""
    named = next((c for c in CHARACTERS if c.name == reading.get("character")), None)
    if named is not None:
        return named.shape, named.style, named.colour, named.inner
    if "none" in (reading.get("colour"), reading.get("shape"), reading.get("style")):
        return None
    badge = reading.get("badge", "none")
    return reading["shape"], reading["style"], reading["colour"], None if badge == "none" else badge


def _least_error_terms(images: torch.Tensor, bg: torch.Tensor, look: tuple[str, str, str, str | None],
                       r_share: float) -> torch.Tensor:
    """Per image, the least squared error of the look drawn at radius `r_share` over every integer position, less
    the image's own energy Σ (bg − image)² (the same at every position and size: the caller adds it once).

    A candidate at one position is bg·(1 − coverage) + colour; its squared error against the image expands into
    sums over the window that are cross-correlations of the template with the image, its background (a ramp, the
    same on the three channels) and their difference, so one conv2d per term scores every position of every image
    at once (the loop over positions and images cost ~180 ms an image; this ~3 ms)."""
    size = images.shape[-1]
    colour, coverage = (t.double() for t in _template(*look, r_share, size))
    # Every size×size window of the centred (2·size)² canvas is the object at one position; the window
    # starting at size - c puts its centre at c, so the crop keeps the centres the renderer can draw.
    lo, hi = (round(share * size) for share in CENTRES)
    crop = slice(size - hi, 2 * size - lo)
    col, cov = colour[None, :, crop, crop], coverage[None, :, crop, crop]
    diff, ramp = bg - images, bg[:, :1]  # (N, 3, s, s), (N, 1, s, s)
    window = torch.ones(1, 1, size, size, dtype=col.dtype)
    err = (F.conv2d((col ** 2).sum(1, keepdim=True), window)  # Σ colour²
           - 2 * F.conv2d(col.sum(1, keepdim=True) * cov, ramp)  # − 2 Σ colour·coverage·bg
           + 3 * F.conv2d(cov ** 2, ramp ** 2)  # + Σ (coverage·bg)² over 3 channels
           + 2 * F.conv2d(col, diff)  # + 2 Σ colour·(bg − image)
           - 2 * F.conv2d(cov, ramp * diff.sum(1, keepdim=True)))  # − 2 Σ coverage·bg·(bg − image)
    return err[0].flatten(1).min(1).values


def shape_fits(images: np.ndarray, readings: Sequence[Mapping[str, str]]) -> np.ndarray:
    """(N, len(SHAPES)): `fit` of each image drawn as each of the world's shapes, at the colour and style read."""
    return np.stack([fit(images, [dict(r, shape=s, character="none") for r in readings]) for s in SHAPES], 1)


def render_check(seed: int = 0, n: int = 8, size: int = 32) -> np.ndarray:
    """`fit` of rendered world objects against their true labels (a self-test: all close to 1)."""
    from zerase.world.concepts import random_scene
    from zerase.world.probe import scene_labels
    from zerase.world.render import render

    rng = random.Random(seed)
    scenes = [random_scene(rng) for _ in range(n)]
    images = np.stack([render(s, rng, size) for s in scenes])
    return fit(images, [scene_labels(s) for s in scenes])
