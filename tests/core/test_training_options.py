"""Issue 15's opt-in training options: the level constraint on λ, resampled erase prompts, on-policy banks,
and the UCE baseline's closed-form edit, each run for real on the tiny model at toy sizes."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from zerase.baselines.uce import uce_erase
from zerase.model.generate import generate
from zerase.model.pipeline import encode_prompts
from zerase.patch.apply import PatchedPipeline
from zerase.patch.artifact import load_artifact
from zerase.train.config import EraseConfig
from zerase.train.erasure import erase
from zerase.train.lagrangian import LevelController
from zerase.train.presets import model_defaults
from zerase.train.prompt_pool import prompt_pool
from zerase.train.prompts import attack_spellings, concept_spans, concept_token_positions
from zerase.train.trajectories import build_bank
from zerase.world.profile import world_erase_contexts


def small_config(concept: str = "red", **kw) -> EraseConfig:
    base = dict(concept=concept, preservation=["a blue circle", "a green square"], steps=4, trajectories=4,
                erase_batch=4, preserve_batch=2, shuffle_variants=1, seed=7)
    return EraseConfig(**(model_defaults() | base | kw))


def test_level_lambda_rises_above_the_tolerated_drift_and_falls_below_it() -> None:
    ctl = LevelController(beta=0.1, tau=0.01, energy=2.0)
    for _ in range(10):
        ctl.update(0.04)  # L_pr / E = 0.02: twice τ, so +0.1 per step
    assert abs(ctl.lam - 1.0) < 1e-9
    for _ in range(30):
        ctl.update(0.0)  # no drift: -0.1 per step, clamped at 0
    assert ctl.lam == 0.0


def test_pool_respells_the_concept_but_never_as_the_evaluation_attacks(pipe) -> None:
    groups = prompt_pool("red", 40, 8, random.Random(0), category="abstraction",
                         contexts=world_erase_contexts("red"), perturb=0.5)
    assert len(groups) == 40 and all(g[0].spelled == "red" for g in groups), "each group starts with its base"
    variants = [p for g in groups for p in g]
    held_out = {s for ss in attack_spellings("red").values() for s in ss}
    assert len(variants) >= 200
    assert not {p.spelled for p in variants} & held_out
    assert sum(p.spelled != "red" for p in variants) > 60, "about half the variants are respelt"
    for p in variants[:60]:  # the concept as written is found, and its tokens, on the final prompt
        assert concept_spans(p.text, p.spelled), p
        assert concept_token_positions(pipe.tokenizer, p.text, p.spelled), p


def test_pool_with_on_policy_banks_and_level_lambda_trains(pipe) -> None:
    config = small_config(steps=4, prompt_pool=12, perturb=0.5, refresh_every=2, modulation="level",
                          category="abstraction", erase_contexts=world_erase_contexts("red"))
    result = erase(pipe, config)
    assert result.steps_done == 4 and len(result.history) == 4
    assert result.timings["refresh_s"] > 0, "the bank was re-sampled with the LoRA at step 2"
    assert result.final_lambda >= 0 and all(np.isfinite(m.loss_erase) for m in result.history)
    assert any(float(v.abs().max()) > 0 for k, v in result.lora_state.items() if k.endswith("lora_B.weight"))
    assert not any(isinstance(m, torch.nn.Module) and hasattr(m, "lora_A") for m in pipe.transformer.modules()), \
        "the pipeline is left unpatched"


def test_uce_edit_is_served_as_a_gated_artifact_that_changes_the_concept_most(pipe, settings, tmp_path) -> None:
    config = small_config(target="strip", trajectories=4)
    result = uce_erase(pipe, config)
    assert result.steps_done == 0 and 0 < result.timings["uce_energy_kept"] <= 1
    path = tmp_path / "uce.safetensors"
    result.save(path)
    artifact = load_artifact(path, pipe)
    assert artifact.metadata["gating"] == "text-only" and artifact.metadata["rank"] == config.rank
    prompts, seeds = ["a red circle", "a blue circle"], [0, 0]
    before = generate(pipe, prompts, seeds, settings)
    patched = PatchedPipeline(pipe)
    patched.apply([artifact])
    try:
        after = generate(pipe, prompts, seeds, settings)
    finally:
        patched.clear()
    drift = np.abs(after.astype(float) - before.astype(float)).mean(axis=(1, 2, 3)) / 255
    assert drift[0] > 0.01 and drift[0] > 2 * drift[1], drift


def test_anchor_paths_follow_the_anchor_and_train(pipe, settings) -> None:  # noqa: ANN001
    filled, outlined, empty = encode_prompts(pipe, ["a filled red circle", "an outlined red circle", ""])

    def bank(embeds, anchors, follow):  # noqa: ANN001, ANN202
        return build_bank(pipe, embeds, empty, anchors, 2, settings, torch.Generator().manual_seed(3),
                          follow_anchor=follow)
    on_anchor, own, anchor_itself = bank([filled], [outlined], True), bank([filled], [outlined], False), \
        bank([outlined], None, False)
    # Sampled along the anchor's velocity, the states are the anchor's own path; the targets stay those of the bank.
    assert torch.allclose(on_anchor.states, anchor_itself.states, atol=1e-5)
    assert not torch.allclose(on_anchor.states, own.states, atol=1e-3)
    assert torch.allclose(on_anchor.anchor, anchor_itself.cond, atol=1e-5)
    assert on_anchor.prompt.eq(0).all(), "each state is still trained on the concept's prompt"
    config = small_config("filled", target="replace", anchor="outlined", anchor_paths=0.5,
                          erase_prompts=["a filled red circle"])
    assert erase(pipe, config).steps_done == config.steps
    with pytest.raises(ValueError, match="anchor_paths"):
        small_config(anchor_paths=1.5)
