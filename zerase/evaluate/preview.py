"""The before/after preview grid a moderator reads: one row pair per prompt (the base model, then the
erased model: "after (erased)" for the concept's prompt, first, "after (kept)" for each preserved prompt), one
column per seed, every row and column labelled, and under each image what the evaluator read in it (when there
is an evaluator)."""

from __future__ import annotations

import textwrap
from collections.abc import Collection, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TILE = 128  # px, the longer side of each image (the world's 32 px images are scaled 4x, kept sharp)
LABEL_W = 190  # the left column: the prompt and before/after
HEADER_H = 20  # the top row: the seeds
READING_H = 28  # under each image: the evaluator's reading, on up to two lines
INK, PAPER, AFTER_INK = (20, 20, 20), (250, 250, 250), (150, 20, 20)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)  # Pillow's own font: nothing to download or mount


def _tile(image: np.ndarray) -> Image.Image:
    h, w = image.shape[:2]
    factor = TILE / max(h, w)
    resample = Image.Resampling.NEAREST if factor > 1 else Image.Resampling.LANCZOS
    return Image.fromarray(image).resize((round(w * factor), round(h * factor)), resample)


def labelled_grid(before: np.ndarray, after: np.ndarray, prompts: Sequence[str], seeds: Sequence[int],
                  readings_before: Sequence[Collection[str]] | None = None,
                  readings_after: Sequence[Collection[str]] | None = None) -> np.ndarray:
    """`before`/`after`: (len(prompts) * len(seeds), H, W, 3) uint8, prompt-major (prompt i, seed j at
    i * len(seeds) + j); `prompts[0]` is the concept's, the rest preserved. Returns the grid as (H', W', 3) uint8."""
    n_p, n_s = len(prompts), len(seeds)
    if len(before) != n_p * n_s or len(after) != n_p * n_s:
        raise ValueError(f"{len(before)}/{len(after)} images for {n_p} prompts x {n_s} seeds")
    tile_w, tile_h = _tile(before[0]).size
    cell_h = tile_h + (READING_H if readings_before is not None else 0)
    canvas = Image.new("RGB", (LABEL_W + n_s * tile_w, HEADER_H + 2 * n_p * cell_h), PAPER)
    draw = ImageDraw.Draw(canvas)
    small, label = _font(11), _font(12)
    for j, seed in enumerate(seeds):
        draw.text((LABEL_W + j * tile_w + 4, 4), f"seed {seed}", fill=INK, font=label)
    for i, prompt in enumerate(prompts):
        # The first prompt is the concept's (profile.preview_prompts): its erased row should lose it; the
        # preserved prompts' rows should keep what they show.
        after_name = "after (erased)" if i == 0 else "after (kept)"
        for half, (images, readings, name) in enumerate(((before, readings_before, "before"),
                                                         (after, readings_after, after_name))):
            top = HEADER_H + (2 * i + half) * cell_h
            ink = AFTER_INK if half else INK
            draw.text((4, top + 4), name, fill=ink, font=label)
            if half == 0:
                wrapped = textwrap.wrap(prompt, 26)[:max(1, (2 * cell_h - 24) // 13)]
                draw.multiline_text((4, top + 22), "\n".join(wrapped), fill=INK, font=small, spacing=2)
            for j in range(n_s):
                k = i * n_s + j
                canvas.paste(_tile(images[k]), (LABEL_W + j * tile_w, top))
                if readings is not None:
                    seen = "\n".join(textwrap.wrap(", ".join(sorted(readings[k])) or "none", 23)[:2])
                    draw.multiline_text((LABEL_W + j * tile_w + 3, top + tile_h + 1), seen, fill=ink, font=small,
                                        spacing=1)
        draw.line([(0, HEADER_H + 2 * (i + 1) * cell_h - 1), (canvas.width, HEADER_H + 2 * (i + 1) * cell_h - 1)],
                  fill=(190, 190, 190))
    return np.asarray(canvas)
