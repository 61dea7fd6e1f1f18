"""Consolidation on the world's model (fp32): a set of erasures distilled into one patch of the fixed served rank."""

from __future__ import annotations

import pytest
import torch
from diffusers import ZImagePipeline

from zerase.model.pipeline import encode_prompts
from zerase.model.profiles import profile_for
from zerase.model.sampling import SamplingSettings
from zerase.patch.apply import PatchedPipeline
from zerase.patch.artifact import LoraArtifact
from zerase.serve.consolidation import ConsolidationSettings, consolidate
from zerase.serve.fusion import FUSED_RANK, fuse_closed_form
from zerase.serve.served_patch import FALLBACK_KEEP_WEIGHT, served_patch
from zerase.train.presets import resolve
from zerase.train.trajectories import build_bank, raw_outputs

from .test_real_model_path import random_artifact

pytestmark = pytest.mark.minutes(2.3)  # scheduled first (tests/conftest.py)

CONCEPTS = {"Mira": ["Mira", "a picture of Mira"], "red": ["a red circle", "a red star"]}
KEEP = ["", "a blue square", "a green triangle"]
SAMPLING = SamplingSettings(steps=4, guidance_scale=0.0, height=32, width=32)


def _artifacts(pipe: ZImagePipeline) -> list[LoraArtifact]:
    out = []
    for seed, concept in enumerate(CONCEPTS, start=1):
        artifact = random_artifact(pipe, seed, 5e-2)
        artifact.metadata["config"], artifact.metadata["concept"] = {"concept": concept}, concept
        out.append(artifact)
    return out


def _outputs(pipe: ZImagePipeline, patch: list[LoraArtifact], prompts: list[str]) -> torch.Tensor:
    """Raw outputs with `patch` applied at weight 1 each, at states the frozen model reaches on `prompts` (a seed
    no training used)."""
    caps = encode_prompts(pipe, prompts)
    bank = build_bank(pipe, caps, encode_prompts(pipe, [""])[0], None, len(prompts), SAMPLING,
                      torch.Generator().manual_seed(99))
    patched = PatchedPipeline(pipe)
    patched.apply(patch, [1.0] * len(patch))
    try:
        with torch.no_grad():
            return raw_outputs(pipe.transformer, [caps[int(i)] for i in bank.prompt], bank.states, bank.t)
    finally:
        patched.clear()


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean())


def test_consolidation_serves_each_erasure_and_keeps_the_rest(pipe: ZImagePipeline) -> None:
    # Trained from zero: on states it never trained on, each erasure's prompts come out most of the way to that
    # erasure's own output, and the kept prompts stay much nearer the frozen model than under the plain sum.
    artifacts = _artifacts(pipe)
    fused = consolidate(pipe, artifacts, list(CONCEPTS.values()), KEEP, SAMPLING,
                        ConsolidationSettings(steps=150, batch=4))
    assert fused.metadata["gating"] == "text-only" and fused.metadata["fusion"]["method"] == "consolidated"
    assert sorted(fused.module_paths) == sorted(artifacts[0].module_paths)
    assert all(t.shape[0] == FUSED_RANK for k, t in fused.tensors.items() if k.endswith("lora_A.weight"))
    for artifact, prompts in zip(artifacts, CONCEPTS.values(), strict=True):
        own, frozen = _outputs(pipe, [artifact], prompts), _outputs(pipe, [], prompts)
        assert _err(_outputs(pipe, [fused], prompts), own) < 0.5 * _err(frozen, own)
    frozen = _outputs(pipe, [], KEEP)
    assert _err(_outputs(pipe, [fused], KEEP), frozen) < 0.2 * _err(_outputs(pipe, artifacts, KEEP), frozen)


def test_consolidation_starts_from_the_patch_it_is_given(pipe: ZImagePipeline) -> None:
    artifacts = _artifacts(pipe)
    closed = fuse_closed_form(pipe, artifacts, list(CONCEPTS.values()), KEEP, SAMPLING, seeds=(0,))
    unchanged = consolidate(pipe, artifacts, list(CONCEPTS.values()), KEEP, SAMPLING,
                            ConsolidationSettings(steps=0), init=closed)
    assert unchanged.metadata["fusion"]["init"] == "closed_form"
    for path, delta in closed.delta_weights().items():
        torch.testing.assert_close(unchanged.delta_weights()[path], delta, rtol=1e-5, atol=1e-7)


def test_the_routed_fallback_weighs_the_kept_prompts_more(pipe: ZImagePipeline) -> None:
    # The fallback serves only prompts naming none of the set, the kept concepts among them: distilled from each
    # erasure as served (their strengths), with its kept term weighted FALLBACK_KEEP_WEIGHT (at 1 it took an outlined
    # character nobody named from 1.00 to 0.75 of her images).
    served = []
    for artifact, (concept, category) in zip(_artifacts(pipe), [("Mira", "celebrity"), ("red", "abstraction")],
                                             strict=True):
        artifact.metadata["config"] = resolve(concept, category).to_dict()
        served.append(artifact.at_strength(2.0))
    fallback = served_patch(pipe, served, profile_for(None), "routed")
    fusion = fallback.metadata["fusion"]
    assert fusion["method"] == "consolidated" and fusion["keep_weight"] == FALLBACK_KEEP_WEIGHT > 1
    assert fusion["sources"] == list(CONCEPTS) and fusion["source_strengths"] == [2.0, 2.0]
