"""The per-job report: which prompts the preview shows, and that it measures change and only change."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from zerase.artifact import load_artifact
from zerase.config import EraseConfig
from zerase.erasure import erase
from zerase.evaluation import PREVIEW_TILE, erasure_report
from zerase.presets import model_defaults
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
    assert len(ev["per_concept"]) == 13  # every other concept of the world, once each
    assert ev["images"] == 2 * (4 + 2 + 13 + len(ev["attacks"]))  # preview + concept + others + attacks

    grid = report.preview
    assert report.preview_prompts == ["a red circle", "a blue circle", "a yellow star", "Mira"]
    assert grid.shape == (2 * PREVIEW_TILE, 4 * PREVIEW_TILE, 3) and grid.dtype == np.uint8
    assert np.abs(grid[:PREVIEW_TILE].astype(int) - grid[PREVIEW_TILE:]).max() <= 1  # before row == after row


class WithoutProbe(WorldProfile):
    """The bundled model as it would come without its concept probe."""

    def evaluator(self) -> None:
        return None


def test_without_a_probe_only_the_preview_is_made(pipe, profile, null_artifact):
    report = erasure_report(pipe, null_artifact, WithoutProbe(profile.model_dir))
    assert report.evaluation["skipped"] == "no concept probe for this model"
    assert "acc_e" not in report.evaluation and report.evaluation["images"] == 8
    assert report.preview.shape == (2 * PREVIEW_TILE, 4 * PREVIEW_TILE, 3)
