"""Artifact format, base-model check, multi-concept merging (Appendix F), checkpoint/resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from zerase.patch.apply import PatchedPipeline
from zerase.patch.artifact import ArtifactError, load_artifact
from zerase.train.config import EraseConfig
from zerase.train.erasure import erase
from zerase.train.presets import model_defaults


def small_config(concept: str = "red", **kw) -> EraseConfig:
    base = dict(concept=concept, preservation=["a blue circle", "a green square"], steps=4, trajectories=4,
                erase_batch=4, preserve_batch=2, shuffle_variants=1, seed=7)
    return EraseConfig(**(model_defaults() | base | kw))


@pytest.fixture(scope="module")
def red_artifact(pipe, tmp_path_factory):
    path = tmp_path_factory.mktemp("art") / "red.safetensors"
    erase(pipe, small_config()).save(path)
    return path


def test_round_trip_keeps_tensors_and_metadata(pipe, red_artifact):
    artifact = load_artifact(red_artifact, pipe)
    meta = artifact.metadata
    assert meta["concept"] == "red" and meta["gating"] == "text-only" and meta["rank"] == 4
    assert meta["target_modules"] == ["to_q", "to_k", "to_v"]
    assert meta["layers"] == list(range(len(pipe.transformer.layers)))
    assert meta["preservation"] == ["a blue circle", "a green square"]
    assert {"epsilon", "eta", "steps", "seed", "final_lambda", "timings", "base_model"} <= set(meta)
    with safe_open(str(red_artifact), framework="pt") as f:
        assert set(f.keys()) == set(artifact.tensors)
    assert any(t.abs().sum() > 0 for k, t in artifact.tensors.items() if "lora_B" in k), "training moved B"


def test_other_base_model_is_refused(pipe, red_artifact):
    weight = pipe.transformer.layers[0].attention.to_q.weight
    original = weight.detach().clone()
    with torch.no_grad():
        weight.add_(1e-3)
    try:
        with pytest.raises(ArtifactError, match="another base model"):
            load_artifact(red_artifact, pipe)
    finally:
        with torch.no_grad():
            weight.copy_(original)
    load_artifact(red_artifact, pipe)  # restored: accepted again


def test_tampered_metadata_and_non_artifacts_are_refused(pipe, red_artifact, tmp_path):
    with safe_open(str(red_artifact), framework="pt") as f:
        header, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta = json.loads(header["zerase"])
    meta["base_model"]["config_sha256"] = "0" * 64
    save_file(tensors, str(tmp_path / "other.safetensors"), metadata=header | {"zerase": json.dumps(meta)})
    with pytest.raises(ArtifactError, match="config differ"):
        load_artifact(tmp_path / "other.safetensors", pipe)
    save_file(tensors, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ArtifactError, match="not a Z-Erase artifact"):
        load_artifact(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(ArtifactError, match="not a readable"):
        load_artifact(tmp_path / "junk.safetensors")


def test_merge_is_the_weighted_sum_of_delta_weights(pipe, red_artifact, tmp_path):
    blue_path = tmp_path / "blue.safetensors"
    erase(pipe, small_config("blue", preservation=["a red circle"], seed=3)).save(blue_path)
    red, blue = load_artifact(red_artifact), load_artifact(blue_path)
    patched = PatchedPipeline(pipe)
    for weights, expect in (([0.3, 0.7], (0.3, 0.7)), (None, (0.5, 0.5))):
        patched.apply([red, blue], weights)
        try:
            dr, db = red.delta_weights(), blue.delta_weights()
            for path, module in patched._model.modules.items():  # noqa: SLF001
                a, b = module.text_factors
                assert a.shape[0] == 2 * red.metadata["rank"], "served in low rank: the factors are stacked"
                want = expect[0] * dr[path] + expect[1] * db[path]
                assert torch.allclose(b @ a, want, atol=1e-6)
        finally:
            patched.clear()
    assert not hasattr(pipe.transformer.layers[0].attention.to_q, "base"), "clear() restores the frozen model"


def test_resume_from_checkpoint_equals_an_uninterrupted_run(pipe, tmp_path):
    config = small_config(steps=6)
    straight = erase(pipe, config)
    calls = {"n": 0}

    def stop_after_three() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    first = erase(pipe, config, should_stop=stop_after_three, checkpoint_dir=tmp_path)
    assert first.cancelled and first.steps_done == 3
    resumed = erase(pipe, config, checkpoint_dir=tmp_path)
    assert not resumed.cancelled and resumed.steps_done == 6
    for key, tensor in straight.lora_state.items():
        assert torch.equal(tensor, resumed.lora_state[key]), key
    assert resumed.final_lambda == straight.final_lambda


def test_checkpoint_of_other_settings_is_refused(pipe, tmp_path):
    erase(pipe, small_config(steps=2), checkpoint_dir=tmp_path, checkpoint_every=1)
    with pytest.raises(ValueError, match="other settings"):
        erase(pipe, small_config(steps=2, seed=99), checkpoint_dir=tmp_path)


def test_gradient_checkpointing_trains_the_same_lora(pipe):
    """The accelerator path (activations recomputed in the backward pass, hooks included) gives the
    same update as storing them: the attention recorder and the gating must behave alike both times."""
    config = small_config(steps=3)
    stored = erase(pipe, config, gradient_checkpointing=False)
    recomputed = erase(pipe, config, gradient_checkpointing=True)
    assert not pipe.transformer.gradient_checkpointing, "erase() leaves the model as it found it"
    for key, tensor in stored.lora_state.items():
        assert torch.allclose(tensor, recomputed.lora_state[key], atol=1e-6), key
    assert [m.loss_attn for m in recomputed.history] == pytest.approx([m.loss_attn for m in stored.history])


def test_many_patches_serve_as_one_dense_product_with_the_same_images(pipe, red_artifact):
    from zerase.model.generate import generate
    from zerase.model.profiles import profile_for

    red = load_artifact(red_artifact)
    settings = profile_for().sampling
    patched = PatchedPipeline(pipe)
    try:
        patched.apply([red])  # rank 4 on a 128-wide model: low-rank factors
        module = next(iter(patched._model.modules.values()))  # noqa: SLF001
        assert module.text_factors is not None and module.text_delta is None
        once = generate(pipe, ["a red circle"], [0], settings)
        patched.apply([red] * 20)  # the average of 20 copies is the same ΔW, at stacked rank 80: dense is cheaper
        module = next(iter(patched._model.modules.values()))  # noqa: SLF001
        assert module.text_factors is None and module.text_delta is not None and module.text_weight is not None
        many = generate(pipe, ["a red circle"], [0], settings)
    finally:
        patched.clear()
    assert np.abs(once.astype(int) - many).max() <= 1
