"""The prompt guard (zerase.serve.guard) on the bundled model, and on the Turbo-shaped scaffold's real tokenizer:
a concept's guard, calibrated on prompts it then is checked against only where they were held out, trips on the
concept as the model reads it (any case, a respelling that keeps its tokens) and not on other concepts or
general captions; the anchor action takes the concept's words out; spans are the prompt's own characters."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from diffusers import ZImagePipeline

from zerase.model.pipeline import load_pipeline
from zerase.model.profiles import BUNDLED_MODEL_DIR, profile_for
from zerase.serve.guard import PromptGuard
from zerase.serve.guard_calibration import calibrate_concept, fit_prototypes
from zerase.train.prompts import respelt


@pytest.fixture(scope="module")
def guard(pipe: ZImagePipeline) -> PromptGuard:
    return PromptGuard.for_pipeline(pipe)


@pytest.fixture(scope="module")
def red(guard: PromptGuard) -> PromptGuard:
    calibration, prototypes = calibrate_concept(guard, profile_for(BUNDLED_MODEL_DIR), "red", "abstraction")
    assert calibration.passes, calibration.misses()
    assert calibration.detection >= 0.95 and calibration.attack_detection["case"] >= 0.95
    assert calibration.false_positives["coco"] <= 0.01 and calibration.false_positives["others"] <= 0.02
    assert calibration.details["held_out"]["coco"] >= 300, "false positives measured on enough captions"
    guard.add("er_red", "red", None, calibration.threshold, prototypes)
    return guard


def test_the_guard_reads_the_concept_not_its_spelling(red: PromptGuard) -> None:
    for prompt in ("a red circle", "a RED star", "a square that is Red", "a reddish triangle, on a table"):
        trip = red.check(prompt)
        assert trip is not None and trip.key == "er_red", prompt
        assert prompt[trip.start:trip.end].lower().startswith("red"), (prompt, trip)
    for prompt in ("a blue circle", "a green star that is outlined", "Mira", "A man riding a bike down a street."):
        assert red.check(prompt) is None, prompt


def test_near_spellings_of_a_longer_concept_are_read_as_it(guard: PromptGuard) -> None:
    calibration, prototypes = calibrate_concept(guard, profile_for(BUNDLED_MODEL_DIR), "purple", "abstraction")
    assert calibration.passes and min(calibration.attack_detection.values()) >= 0.95, calibration.attack_detection
    assert respelt("a purpel star and a superpurple circle", "purple") == (
        "a purple star and a purple circle", [(2, 8, 2, 8), (20, 31, 20, 26)])
    assert respelt("a bed", "red") is None and respelt("Tom Cruse", "Tom Cruise") is None  # left to the encoder
    score, (start, end) = guard.scores("a prple star", prototypes, "purple")
    assert score >= calibration.threshold and (start, end) == (2, 7)  # the prompt's own characters


def test_the_anchor_action_takes_the_concept_out(red: PromptGuard) -> None:
    for prompt, left in (("a red circle", "a circle"), ("a RED star, high quality", "a star, high quality")):
        rewritten, trips = red.rewrite(prompt)
        assert [t.key for t in trips] == ["er_red"] and rewritten == left
    assert red.rewrite("a blue square") == ("a blue square", [])


def test_a_calibration_that_cannot_keep_its_promise_is_refused(guard: PromptGuard) -> None:
    strict, _ = calibrate_concept(guard, profile_for(BUNDLED_MODEL_DIR), "circle", "entity", coco_limit=0.0,
                                  others_limit=0.0, min_detection=1.01)
    assert not strict.passes and any("detects" in m for m in strict.misses())


def test_the_guard_runs_on_the_turbo_tokenizer(turbo_scaffold: Callable[..., Path]) -> None:
    """The real chat template and Qwen tokenizer: a prompt's spans map back to its own characters."""
    turbo = load_pipeline(turbo_scaffold())
    guard = PromptGuard.for_pipeline(turbo, general=["a photo of a cat", "A man riding a horse."])
    prototypes = fit_prototypes(guard, profile_for(turbo_scaffold()), "Tom Cruise", "celebrity")
    assert prototypes.shape[1] == turbo.text_encoder.config.hidden_size
    prompt = "a photo of Tom Cruise on a red carpet"
    score, (start, end) = guard.scores(prompt, prototypes)
    assert 0 <= start < end <= len(prompt) and score > 0.99  # its own tokens are a prototype
    assert "Tom" in prompt[start:end] or "Cruise" in prompt[start:end]
