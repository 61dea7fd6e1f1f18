"""A short erasure really erases: the probe's hit rate drops for the concept, not for others."""

from __future__ import annotations

import numpy as np
import pytest

from zerase.model.generate import generate
from zerase.patch.apply import PatchedPipeline
from zerase.patch.artifact import load_artifact
from zerase.train.erasure import erase
from zerase.train.presets import resolve

pytestmark = pytest.mark.minutes(1.1)  # scheduled first (tests/conftest.py)

SEEDS = list(range(16))
ERASED = ["a red circle", "a red square", "a filled red star"]
KEPT = {"colour": ["a blue circle", "a yellow square", "a green triangle"], "shape": ["a purple circle"]}


def hit_rate(pipe, probe, settings, prompts, axis, value_of):
    images = generate(pipe, [p for p in prompts for _ in SEEDS], SEEDS * len(prompts), settings)
    labels = probe.classify(images)
    expected = [value_of(p) for p in prompts for _ in SEEDS]
    return float(np.mean([lab[axis] == e for lab, e in zip(labels, expected)]))


@pytest.mark.slow
def test_erasing_red_removes_red_and_keeps_other_colours(pipe, probe, settings, tmp_path):
    config = resolve("red", "abstraction", steps=120, sample_steps=settings.steps,
                     guidance_scale=settings.guidance_scale, height=settings.height, width=settings.width)
    result = erase(pipe, config)
    result.save(tmp_path / "red.safetensors")
    colour = lambda p: p.split()[-2]  # noqa: E731 - "a blue circle" -> blue
    shape = lambda p: p.split()[-1]  # noqa: E731
    before_red = hit_rate(pipe, probe, settings, ERASED, "colour", lambda p: "red")
    before_kept = hit_rate(pipe, probe, settings, KEPT["colour"], "colour", colour)
    before_shape = hit_rate(pipe, probe, settings, KEPT["shape"], "shape", shape)
    patched = PatchedPipeline(pipe)
    patched.apply([load_artifact(tmp_path / "red.safetensors", pipe)])
    try:
        after_red = hit_rate(pipe, probe, settings, ERASED, "colour", lambda p: "red")
        after_kept = hit_rate(pipe, probe, settings, KEPT["colour"], "colour", colour)
        after_shape = hit_rate(pipe, probe, settings, KEPT["shape"], "shape", shape)
    finally:
        patched.clear()
    assert before_red >= 0.9
    assert after_red <= before_red - 0.5, (before_red, after_red)
    assert after_kept >= before_kept - 0.15, (before_kept, after_kept)
    assert after_shape >= before_shape - 0.15, (before_shape, after_shape)
