"""The token-zeroing baseline (Fig. 3 left) really masks the concept's tokens."""

from __future__ import annotations

import numpy as np

from zerase.baselines.zeroing import TokenZeroing
from zerase.model.generate import generate


def test_zeroing_changes_prompts_with_the_concept_and_no_others(pipe, settings) -> None:
    prompts, seeds = ["a red circle", "a blue square, filled"], [0, 0]
    before = generate(pipe, prompts, seeds, settings)
    zeroing = TokenZeroing(pipe, "red")
    try:
        zeroing.prepare(prompts)
        assert any(zeroing._positions.values()), "the concept's tokens were located"  # noqa: SLF001
        after = generate(pipe, prompts, seeds, settings)
    finally:
        zeroing.remove()
    drift = np.abs(after[0].astype(float) - before[0].astype(float)).mean() / 255
    assert drift > 0.01, f"masking 'red' left the image as it was (drift {drift:.4f})"
    assert np.array_equal(after[1], before[1]), "a prompt without the concept is untouched"
