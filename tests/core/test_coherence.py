"""Coherence on the world: a clean object passes, a smeared one does not, even where the probe still names it
confidently (a Mira erasure's blobs were called coherent at 1.000 by the probe's confidence alone)."""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F

from zerase.world.coherence import CENTRES, RADII, _look, _template, background, fit, shape_fits
from zerase.world.concepts import SHAPES, Scene
from zerase.world.evaluator import COHERENCE_CONFIDENCE, OBJECT_AXES, ProbeEvaluator
from zerase.world.probe import LABELS, NONE, ConceptProbe, scene_labels
from zerase.world.render import render

SCENES = [Scene(c, s, st) for c in ("red", "blue", "purple") for s in ("circle", "square", "star")
          for st in ("filled", "outlined")] + [Scene("purple", "circle", "filled", "Mira", "yellow")]


def _rendered() -> tuple[np.ndarray, list[dict[str, str]]]:
    rng = random.Random(0)
    return np.stack([render(s, rng) for s in SCENES]), [scene_labels(s) for s in SCENES]


def _smeared(images: np.ndarray, strength: float = 0.4) -> np.ndarray:
    """Each image pushed through a smooth random displacement field: the same colours, no clean outline."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    flow = torch.randn(len(x), 2, 4, 4, generator=torch.Generator().manual_seed(0)) * strength
    flow = F.interpolate(flow, size=x.shape[-1], mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    line = torch.linspace(-1, 1, x.shape[-1])
    yy, xx = torch.meshgrid(line, line, indexing="ij")
    warped = F.grid_sample(x, torch.stack([xx, yy], -1)[None] + flow, padding_mode="border", align_corners=True)
    return warped.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def _probe_alone(probe: ConceptProbe, images: np.ndarray) -> np.ndarray:
    """The old check: a colour, shape and style each read with probability >= 0.5."""
    probs = probe.probabilities(images)
    ok = np.ones(len(images), dtype=bool)
    for axis in OBJECT_AXES:
        ok &= (probs[axis].argmax(-1) != LABELS[axis].index(NONE)) & (probs[axis].max(-1) >= COHERENCE_CONFIDENCE)
    return ok


def test_a_rendered_object_is_explained_by_drawing_its_labels() -> None:
    images, labels = _rendered()
    assert fit(images, labels).min() >= 0.8
    # The wrong reading explains much less of the same image.
    wrong = [lab | {"shape": "star" if lab["shape"] != "star" else "circle", "character": NONE} for lab in labels]
    assert (fit(images, wrong) < fit(images, labels)).all()
    # Drawn as each of the four shapes, the true one explains the most.
    assert [SHAPES[i] for i in shape_fits(images, labels).argmax(1)] == [s.shape for s in SCENES]
    # Nothing read, nothing explained.
    assert fit(images[:1], [dict.fromkeys(LABELS, NONE)]).tolist() == [0.0]


def test_the_fit_is_the_least_squares_over_every_position_and_size() -> None:
    """The batched fit (one conv2d per term) against its definition, computed candidate by candidate."""
    images, labels = _rendered()
    images, labels = images[:3], [lab | {"shape": "triangle"} for lab in labels[:3]]  # one right, two wrong
    x = torch.from_numpy(images).permute(0, 3, 1, 2).double() / 255
    bg, size = background(x), x.shape[-1]
    lo, hi = (round(share * size) for share in CENTRES)
    for i, lab in enumerate(labels):
        best = float("inf")
        for r in RADII:
            colour, coverage = (t.double() for t in _template(*_look(lab), r, size))  # type: ignore[misc]
            for top in range(size - hi, size - lo + 1):
                for left in range(size - hi, size - lo + 1):
                    window = (slice(top, top + size), slice(left, left + size))
                    candidate = bg[i] * (1 - coverage[:, window[0], window[1]]) + colour[:, window[0], window[1]]
                    best = min(best, float(((candidate - x[i]) ** 2).sum()))
        energy = float(((x[i] - bg[i]) ** 2).sum())
        assert abs(fit(images[i:i + 1], [lab])[0] - max(0.0, 1 - best / energy)) < 1e-6


def test_clean_objects_are_coherent_and_smeared_ones_are_not(probe: ConceptProbe) -> None:
    evaluator = ProbeEvaluator(probe)
    images, _ = _rendered()
    assert all(evaluator.coherent(images, [""] * len(images)))
    smeared = _smeared(images)
    assert _probe_alone(probe, smeared).mean() >= 0.6  # the probe still names most of them
    assert np.mean(evaluator.coherent(smeared, [""] * len(smeared))) <= 0.2
