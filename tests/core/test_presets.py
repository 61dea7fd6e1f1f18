"""Presets never preserve the concept being erased, and the training defaults come from the loaded model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from zerase.config import EraseConfig
from zerase.presets import REAL_PRESERVATION, resolve, resolve_request
from zerase.profiles import UnknownZImageProfile, ZImageProfile, ZImageTurboProfile, profile_for


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
    assert resolved.dropped == ["a church at dawn", "a CHURCH", "a chu\u200brch spire"]
    assert resolved.config.preservation == ["a churchyard in fog", "a dog", "Cafe\u0301 terrace", "a cafeteria"]
    cafe = resolve_request("Café", "entity", preservation=requested)  # NFC concept, NFD entry
    assert cafe.dropped == ["Cafe\u0301 terrace"]


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
    with caplog.at_level(logging.WARNING, logger="zerase.profiles"):
        unknown = profile_for(scheduler_dir(tmp_path / "other", shift=1.5))
    assert isinstance(unknown, UnknownZImageProfile)
    assert "no model profile recognises" in caplog.text and "steps=50" in caplog.text
