"""Routed serving on the world's model (fp32): each prompt gets the erasures it names, every other prompt the
fallback patch, image by image, whatever else shares the batch."""

from __future__ import annotations

import numpy as np
import pytest
from diffusers import ZImagePipeline

from zerase.model.generate import generate
from zerase.model.profiles import ModelProfile
from zerase.model.sampling import SamplingSettings
from zerase.patch.apply import PatchedPipeline, Routed
from zerase.patch.artifact import LoraArtifact
from zerase.serve.guard import PromptGuard
from zerase.serve.routing import Calibrated, routed_for
from zerase.train.prompts import as_trained

from .test_real_model_path import random_artifact

SAMPLING = SamplingSettings(steps=4, guidance_scale=0.0, height=32, width=32)
CONCEPTS = {"Mira": "celebrity", "Toko": "celebrity"}
CATEGORIES = list(CONCEPTS.values())  # the requests' (an artifact's config does not hold it)


def _artifact(pipe: ZImagePipeline, seed: int, concept: str | None) -> LoraArtifact:
    artifact = random_artifact(pipe, seed, 5e-2)
    if concept is not None:
        artifact.metadata["config"] = {"concept": concept, "category": None}  # as `resolve` leaves it
        artifact.metadata["concept"] = concept
    return artifact


def _images(pipe: ZImagePipeline, patch: list[LoraArtifact], prompts: list[str]) -> np.ndarray:
    patched = PatchedPipeline(pipe)
    patched.apply(patch, [1.0] * len(patch))
    try:
        return generate(pipe, prompts, [0] * len(prompts), SAMPLING)
    finally:
        patched.clear()


def _served(pipe: ZImagePipeline, routed: Routed, prompts: list[str],
            sampling: SamplingSettings = SAMPLING) -> np.ndarray:
    """`prompts` at seed 0 as /generate serves them with `routed` installed."""
    patched = PatchedPipeline(pipe)
    patched.apply_routed(routed)
    try:
        return generate(pipe, prompts, [0] * len(prompts), sampling)
    finally:
        patched.clear()


@pytest.fixture(scope="module")
def reading(pipe: ZImagePipeline) -> tuple[PromptGuard, dict[str, Calibrated]]:
    """One reader and calibration cache for the module, as a serving process keeps them."""
    return PromptGuard.for_pipeline(pipe), {}


@pytest.fixture(scope="module")
def erasures(pipe: ZImagePipeline) -> list[LoraArtifact]:
    return [_artifact(pipe, seed, concept) for seed, concept in enumerate(CONCEPTS, start=1)]


def test_each_prompt_gets_what_it_names(pipe: ZImagePipeline, profile: ModelProfile, erasures: list[LoraArtifact],
                                        reading: tuple[PromptGuard, dict[str, Calibrated]]) -> None:
    fallback = _artifact(pipe, 7, None)
    routed, reports = routed_for(pipe, profile, erasures, fallback, categories=CATEGORIES, guard=reading[0],
                               cache=reading[1])
    assert [(r["concept"], r["category"]) for r in reports] == list(CONCEPTS.items())
    unknown = routed_for(pipe, profile, erasures[:1], fallback, guard=reading[0], cache=reading[1])[1]
    assert unknown[0]["category"] == "entity"  # a version that did not record its requests' categories
    prompts = ["Mira", "a picture of Toko", "Mira and Toko", "a blue star", "Mria on a white background"]
    assert routed.route(prompts) == [(1,), (2,), (1, 2), (0,), (1,)]  # a near-spelling is read as the concept
    mixed = _served(pipe, routed, prompts)  # one batch, every route in it
    mira, toko = erasures
    expected = [_images(pipe, [mira], prompts[:1]), _images(pipe, [toko], prompts[1:2]),
                _images(pipe, [mira, toko], prompts[2:3]), _images(pipe, [fallback], prompts[3:4]),
                _images(pipe, [mira], ["Mira on a white background"])]  # encoded spelt as Mira's erasure learnt it
    for got, want in zip(mixed, expected, strict=True):
        assert np.abs(got.astype(int) - want[0].astype(int)).max() <= 1
    assert not np.array_equal(mixed[3], _images(pipe, [], prompts[3:4])[0])  # the fallback does act


def test_without_a_fallback_unnamed_prompts_get_the_base_model(
        pipe: ZImagePipeline, profile: ModelProfile, erasures: list[LoraArtifact],
        reading: tuple[PromptGuard, dict[str, Calibrated]]) -> None:
    routed, _ = routed_for(pipe, profile, erasures, None, categories=CATEGORIES, guard=reading[0],
                           cache=reading[1])
    prompts = ["a blue star", "Toko"]
    assert routed.route(prompts) == [(), (1,)]
    got = _served(pipe, routed, prompts)
    np.testing.assert_array_equal(got[0], _images(pipe, [], prompts[:1])[0])
    assert np.abs(got[1].astype(int) - _images(pipe, [erasures[1]], prompts[1:])[0].astype(int)).max() <= 1
    np.testing.assert_array_equal(generate(pipe, prompts[:1], [0], SAMPLING), _images(pipe, [], prompts[:1]))


def test_a_guided_batch_routes_each_prompt_and_reads_it_as_alone(
        pipe: ZImagePipeline, profile: ModelProfile, erasures: list[LoraArtifact],
        reading: tuple[PromptGuard, dict[str, Calibrated]]) -> None:
    """With guidance each prompt's samples run twice (cond, then uncond): both get the prompt's own slots. And a
    call's prompts read together (one text-encoder pass) route as each does read alone."""
    fallback = _artifact(pipe, 7, None)
    guided = SamplingSettings(steps=3, guidance_scale=2.0, height=32, width=32)
    routed, _ = routed_for(pipe, profile, erasures, fallback, categories=CATEGORIES, guard=reading[0],
                           cache=reading[1])
    prompts = ["Toko", "a red circle", "Mira"]
    mixed = _served(pipe, routed, prompts, guided)
    patched = PatchedPipeline(pipe)
    for got, patch, prompt in zip(mixed, ([erasures[1]], [fallback], [erasures[0]]), prompts, strict=True):
        patched.apply(patch, [1.0])
        try:
            want = generate(pipe, [prompt], [0], guided)[0]
        finally:
            patched.clear()
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, prompt

    evaluator = profile.evaluator()
    assert evaluator is not None
    shown = sorted({s.prompt for c in CONCEPTS for s in evaluator.plan(c, 1, full=True).shots})
    together = routed_for(pipe, profile, erasures, fallback, categories=CATEGORIES, guard=reading[0],
                          cache=reading[1])[0].route(shown)
    alone = routed_for(pipe, profile, erasures, fallback, categories=CATEGORIES, guard=reading[0],
                       cache=reading[1])[0]
    assert together == [alone.route([p])[0] for p in shown]
    assert {(1,), (2,), (0,)} <= set(together)


def test_a_routed_concept_is_encoded_as_its_erasure_learnt_it(
        pipe: ZImagePipeline, profile: ModelProfile, erasures: list[LoraArtifact],
        reading: tuple[PromptGuard, dict[str, Calibrated]]) -> None:
    # The reader sees through case, near-spellings and letters around a name; the erasure acts on the tokens it was
    # trained on, so the prompt is encoded with the name spelt so. Nothing else in it changes.
    assert as_trained("an OUTLINED circle, Outlined", ["outlined"]) == "an outlined circle, outlined"
    assert as_trained("an superoutlined otulined circle", ["outlined"]) == "an outlined outlined circle"
    assert as_trained("Mi\u200bra in a red circle", ["Mira", "red"]) == "Mira in a red circle"
    assert as_trained("an outline of a circle", []) == "an outline of a circle"
    fallback = _artifact(pipe, 7, None)
    routed, _ = routed_for(pipe, profile, erasures, fallback, categories=CATEGORIES, guard=reading[0],
                           cache=reading[1])
    prompts = ["a picture of TOKO", "superMira", "a blue star", "MIRA"]
    assert routed.route(prompts) == [(2,), (1,), (0,), (1,)]
    assert routed.spell is not None
    assert routed.spell(prompts) == ["a picture of Toko", "Mira", "a blue star", "Mira"]
    got = _served(pipe, routed, prompts)
    mira, toko = erasures
    want = [_images(pipe, [toko], ["a picture of Toko"]), _images(pipe, [mira], ["Mira"]),
            _images(pipe, [fallback], ["a blue star"]), _images(pipe, [mira], ["Mira"])]
    for image, expected in zip(got, want, strict=True):
        assert np.abs(image.astype(int) - expected[0].astype(int)).max() <= 1
