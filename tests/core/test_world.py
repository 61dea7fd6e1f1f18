"""The bundled tiny world: loads like Z-Image Turbo, offline; its probe reads renders right."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
from diffusers import ZImagePipeline

from zerase.model.profiles import BUNDLED_MODEL_DIR
from zerase.world.build import BuildPlan, build_world
from zerase.world.probe import probe_accuracy


def test_bundled_directory_loads_offline_and_generates(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = ZImagePipeline.from_pretrained(str(BUNDLED_MODEL_DIR))
    image = pipe("a red circle", height=32, width=32, num_inference_steps=8, guidance_scale=1.0,
                 output_type="np").images[0]
    assert image.shape == (32, 32, 3)
    assert float(np.asarray(image).std()) > 0.05, "an image, not a flat field"


def test_probe_reads_rendered_ground_truth(probe):
    accuracy = probe_accuracy(probe, 1000, seed=1234)
    assert accuracy["colour"] >= 0.99
    assert min(accuracy["shape"], accuracy["style"], accuracy["character"]) >= 0.95


def test_committed_report_meets_the_targets():
    report = json.loads((BUNDLED_MODEL_DIR / "world.json").read_text())
    acc = report["generation_accuracy"]
    assert acc["colour"] >= 0.95 and acc["shape"] >= 0.85 and acc["style"] >= 0.85 and acc["character"] >= 0.85


@pytest.mark.slow
def test_quick_build_runs_end_to_end(tmp_path):
    report = build_world(tmp_path / "world", BuildPlan.quick(), seed=1, log=lambda m: None)
    loaded = ZImagePipeline.from_pretrained(str(tmp_path / "world"), local_files_only=True)
    assert loaded.transformer.config.dim == report["sizes"]["dim"]
    assert (tmp_path / "world" / "probe" / "probe.safetensors").exists()
    assert set(report["generation_accuracy"]) == {"colour", "shape", "style", "character"}
