"""Presets never preserve the concept being erased, and the training defaults come from the loaded model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from zerase.model.profiles import UnknownZImageProfile, ZImageProfile, ZImageTurboProfile, profile_for
from zerase.train.config import EraseConfig
from zerase.train.presets import REAL_PRESERVATION, general_captions, resolve, resolve_request
from zerase.train.prompts import replace_concept, strip_concept


@pytest.mark.parametrize(("concept", "category", "dropped"), [
    ("church", "entity", "a photo of a church"),
    ("Claude Monet", "artistic_style", "an art in the style of Claude Monet"),
    ("Monet", "artistic_style", "an art in the style of Claude Monet"),  # a part of an entry shows it too
    ("Tom Cruise", "celebrity", "a photo of Tom Cruise"),
    ("origami", "abstraction", "a close scene of origami"),
    ("ORIGAMI", "abstraction", "a close scene of origami"),
])
def test_a_preset_entry_showing_the_concept_is_dropped(concept: str, category: str, dropped: str) -> None:
    assert dropped in REAL_PRESERVATION[category]
    resolved = resolve_request(concept, category)
    assert dropped in resolved.dropped
    assert dropped not in resolved.config.preservation
    assert len(resolved.config.preservation) > 0, "the rest of the set is kept"


def test_requested_entries_are_matched_as_words_in_any_normal_form() -> None:
    requested = ["a church at dawn", "a churchyard in fog", "a CHURCH", "a chu\u200brch spire", "a dog",
                 "Cafe\u0301 terrace", "a cafeteria"]
    resolved = resolve_request("church", "entity", preservation=requested)
    # The listed ones, and the curated neighbour that shows it too (whoever named an entry, it is left out).
    assert resolved.dropped == ["a church at dawn", "a CHURCH", "a chu\u200brch spire", "a photo of a church"]
    assert resolved.config.preservation[:4] == ["a churchyard in fog", "a dog", "Cafe\u0301 terrace", "a cafeteria"]
    cafe = resolve_request("Café", "entity", preservation=requested)  # NFC concept, NFD entry
    assert cafe.dropped == ["Cafe\u0301 terrace"]


def test_what_nobody_named_is_kept_whatever_the_list() -> None:
    # A real model's entity: the curated neighbours, general captions; the request's list comes first.
    listed = resolve_request("church", "entity", preservation=["a red barn"])
    assert listed.config.preservation[0] == "a red barn"
    assert {"a photo of a car", *general_captions()} <= set(listed.config.preservation)
    assert listed.added["neighbours"] and listed.added["general"] == list(general_captions())
    only = resolve_request("church", "entity", preservation=["a red barn"], protect_unnamed=False)
    assert only.config.preservation == ["a red barn"] and only.added == {}
    # The world: its other concepts, and the concept's own prompts with it taken out.
    style = resolve_request("outlined", "artistic_style", preservation=[])
    assert {"a red circle", "a filled red circle", "a blue star"} <= set(style.config.preservation)
    # The characters are drawn in a style too: a style's erasure keeps them (outlined had taken Zed with it).
    assert {"Mira", "Toko", "Zed"} <= set(style.config.preservation)
    assert "a red circle" in style.added["without_concept"]
    assert not [p for p in style.config.preservation if "outlined" in p]


@pytest.mark.parametrize(("prompt", "concept", "kept"), [
    ("an outlined red circle", "outlined", "a red circle"),
    ("a red outlined star", "red", "an outlined star"),
    ("Mira, the character", "Mira", "the character"),
    ("a photo of Claude Monet", "Claude Monet", "a photo of"),
    ("Mira", "Mira", ""),
])
def test_strip_concept_keeps_the_rest_of_the_prompt(prompt: str, concept: str, kept: str) -> None:
    assert strip_concept(prompt, concept) == kept


@pytest.mark.parametrize(("prompt", "concept", "by", "anchor"), [
    ("an outlined star", "outlined", "filled", "a filled star"),  # the world reads "an" as outlined
    ("a filled red star", "filled", "outlined", "an outlined red star"),
    ("blue an star outlined", "outlined", "filled", "blue a star filled"),
    ("a red circle", "circle", "shape", "a red shape"),
])
def test_replace_concept_mends_the_article(prompt: str, concept: str, by: str, anchor: str) -> None:
    assert replace_concept(prompt, concept, by) == anchor


def test_training_settings_have_no_default_of_their_own() -> None:
    with pytest.raises(TypeError, match="sample_steps"):
        EraseConfig(concept="red", preservation=[])  # type: ignore[call-arg]
    config = resolve("red", "abstraction", steps=3)
    world = profile_for()
    assert (config.height, config.width, config.sample_steps) == (world.training.height, world.training.width,
                                                                  world.sampling.steps)


def scheduler_dir(tmp_path: Path, **scheduler: object) -> Path:
    (tmp_path / "scheduler").mkdir(parents=True)
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000} | scheduler))
    return tmp_path


def test_the_checkpoint_is_recognised_by_its_scheduler(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    turbo = profile_for(scheduler_dir(tmp_path / "turbo", shift=3.0, use_dynamic_shifting=False))
    assert isinstance(turbo, ZImageTurboProfile)
    assert (turbo.sampling.steps, turbo.sampling.guidance_scale, turbo.sampling.height) == (8, 0.0, 1024)
    assert (turbo.training.height, turbo.served_steps) == (512, (8,))
    base = profile_for(scheduler_dir(tmp_path / "base", shift=6.0, use_dynamic_shifting=False))
    assert isinstance(base, ZImageProfile) and base.sampling.steps == 50 and base.sampling.guidance_scale > 0
    with caplog.at_level(logging.WARNING, logger="zerase.model.profiles"):
        unknown = profile_for(scheduler_dir(tmp_path / "other", shift=1.5))
    assert isinstance(unknown, UnknownZImageProfile)
    assert "no model profile recognises" in caplog.text and "steps=50" in caplog.text


@pytest.mark.parametrize(("concept", "category", "anchor", "target"), [
    ("Kai", "celebrity", "a purple triangle", "anchor"),  # its own look without the badge, not a smear
    ("Mira", "custom", "a purple circle", "anchor"),
    ("circle", "entity", "square", "replace"),  # in the prompt's context: "a red circle" -> "a red square"
    ("star", "entity", "circle", "replace"),
    ("outlined", "artistic_style", "filled", "replace"),
    ("red", "abstraction", "yellow", "replace"),  # "a red star" -> "a yellow star", not Eq. 5's smear
])
def test_the_world_says_what_its_concepts_turn_into(concept: str, category: str, anchor: str | None,
                                                    target: str) -> None:
    config = resolve(concept, category)
    assert (config.anchor, config.target) == (anchor, target)
    chosen = resolve(concept, category, anchor="a yellow star")  # a request's own anchor is the whole prompt's
    assert (chosen.anchor, chosen.target) == ("a yellow star", "anchor")
    assert resolve(concept, category, target="esd").target == "esd"


@pytest.mark.parametrize(("concept", "category", "pooled"), [
    ("outlined", "artistic_style", True), ("filled", "artistic_style", True),
    ("star", "entity", False), ("red", "abstraction", False), ("Mira", "celebrity", False),
])
def test_styles_train_on_respellings_of_the_models_own_prompts(concept: str, category: str, pooled: bool) -> None:
    config = resolve(concept, category)
    assert bool(config.prompt_pool) == pooled
    if pooled:  # the world's own captions showing the concept, not the category's templates
        assert config.pool_templates == 0.0 and config.perturb > 0
        assert len(config.erase_contexts) > len(config.erase_prompts)
        assert all(concept in c for c in config.erase_contexts)
    else:
        assert config.erase_contexts == []
    # A request's own choice wins.
    assert resolve(concept, category, prompt_pool=0).prompt_pool == 0
    assert resolve(concept, category, pool_templates=0.3, prompt_pool=8).pool_templates == 0.3
