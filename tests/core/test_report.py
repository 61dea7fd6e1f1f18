"""The per-job report: which prompts the preview shows, and that it measures change and only change."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from zerase.evaluate.evaluation import PREVIEW_SEEDS, erasure_report
from zerase.evaluate.preview import HEADER_H, LABEL_W, READING_H, TILE
from zerase.patch.artifact import load_artifact
from zerase.train.config import EraseConfig
from zerase.train.erasure import erase
from zerase.train.presets import model_defaults
from zerase.world.concepts import AXES
from zerase.world.evaluator import concept_prompts
from zerase.world.profile import WorldProfile

PRESERVED = ["a blue circle", "a green square", "a yellow star", "a purple triangle", "Mira", "Toko"]


def test_preview_shows_the_concept_then_preserved_prompts_spread_over_the_set(profile):
    assert profile.preview_prompts("red", PRESERVED) == ["a red circle", "a blue circle", "a yellow star", "Mira"]
    assert profile.preview_prompts("mira", ["Toko"]) == ["Mira", "Toko"]  # the world's spelling
    assert profile.preview_prompts("a dog on a skateboard", []) == ["a dog on a skateboard"]  # no probe concept


@pytest.fixture(scope="module")
def null_artifact(pipe, tmp_path_factory):
    """A real artifact of "red" with ΔW = 0 (B zeroed): patched and base model must draw the same."""
    config = EraseConfig(**model_defaults() | dict(concept="red", preservation=PRESERVED, steps=1, trajectories=2,
                         erase_batch=2, preserve_batch=2, shuffle_variants=1))
    path = tmp_path_factory.mktemp("report") / "red.safetensors"
    erase(pipe, config).save(path)
    artifact = load_artifact(path, pipe)
    zeroed = {k: torch.zeros_like(v) if ".lora_B." in k else v for k, v in artifact.tensors.items()}
    return dataclasses.replace(artifact, tensors=zeroed)


def test_a_null_artifact_changes_no_metric_and_no_pixel(pipe, profile, null_artifact):
    report = erasure_report(pipe, null_artifact, profile, n_seeds=2)
    ev = report.evaluation
    assert ev["concept"] == "red" and ev["axis"] == "colour" and ev["seeds"] == 2
    assert ev["acc_e"] == ev["acc_e_before"] >= 0.5
    assert ev["acc_ir"] == ev["acc_ir_before"] and ev["ha"] == ev["ha_before"]
    assert ev["drift"] < 1e-6
    assert ev["attack_success_rate"]["before"] == ev["attack_success_rate"]["after"]
    others = sum(len(values) for values in AXES.values()) - 1
    assert len(ev["per_concept"]) == others  # every other concept of the world, once each
    concept = 2 * len(concept_prompts("colour", "red").prompts)  # each of its prompts at both seeds
    assert ev["images"] == 2 * (4 * PREVIEW_SEEDS + concept + others + len(ev["attacks"]))

    grid = report.preview
    assert report.preview_prompts == ["a red circle", "a blue circle", "a yellow star", "Mira"]
    cell = TILE + READING_H  # with an evaluator, its reading under each image
    assert grid.shape == (HEADER_H + 2 * 4 * cell, LABEL_W + PREVIEW_SEEDS * TILE, 3) and grid.dtype == np.uint8
    for i in range(4):  # each prompt's before row shows the same images as its after row (ΔW = 0)
        top = HEADER_H + 2 * i * cell
        before, after = grid[top:top + TILE, LABEL_W:], grid[top + cell:top + cell + TILE, LABEL_W:]
        assert np.abs(before.astype(int) - after).max() <= 1


class WithoutProbe(WorldProfile):
    """The bundled model as it would come without its concept probe."""

    def evaluator(self) -> None:
        return None


def test_without_a_probe_only_the_preview_is_made(pipe, profile, null_artifact):
    report = erasure_report(pipe, null_artifact, WithoutProbe(profile.model_dir))
    assert report.evaluation["skipped"] == "no concept probe for this model"
    assert "acc_e" not in report.evaluation and report.evaluation["images"] == 2 * 4 * PREVIEW_SEEDS
    assert report.preview.shape == (HEADER_H + 2 * 4 * TILE, LABEL_W + PREVIEW_SEEDS * TILE, 3)  # no readings


def test_the_unpatched_side_is_generated_once_per_model(pipe, profile, null_artifact):
    first = erasure_report(pipe, null_artifact, profile, n_seeds=2).evaluation
    again = erasure_report(pipe, null_artifact, profile, n_seeds=2).evaluation
    assert first["images_generated"] <= first["images"]
    assert again["images_generated"] == again["images"] // 2, "only the patched side is generated again"
    assert again["acc_e_before"] == first["acc_e_before"] and again["acc_e"] == first["acc_e"]
