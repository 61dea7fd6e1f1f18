"""The real Z-Image Turbo path on a Turbo-shaped model (small widths, the real Qwen tokenizer, random
weights): defaults from the loaded model, no tiny-world preset, bf16 patches served exactly,
localisation on the real vocabulary, the attention mass in fp32, fingerprints hashed once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from zerase.model.generate import generate
from zerase.model.pipeline import encode_prompts, load_pipeline
from zerase.model.profiles import ZImageTurboProfile, profile_for
from zerase.model.sampling import SamplingSettings
from zerase.patch.apply import PatchedPipeline, merged_delta, stack_factors
from zerase.patch.artifact import FORMAT, FORMAT_VERSION, LoraArtifact, base_fingerprint
from zerase.patch.lora import GatedLoraModel, LoraSpec, TextGatedLinear
from zerase.serve.consolidation import ConsolidationSettings, consolidate
from zerase.serve.fusion import FUSED_RANK, caption_grams, fuse_closed_form
from zerase.train.attention import _chunk_mass
from zerase.train.presets import resolve
from zerase.train.prompts import concept_token_positions
from zerase.train.trajectories import build_bank, sampler_schedule
from zerase.world.concepts import AXES
from zerase.world.profile import world_erase_prompts, world_preservation


@pytest.fixture(scope="module")
def bf16_pipe(turbo_scaffold: Callable[..., Path]):  # noqa: ANN201
    return load_pipeline(turbo_scaffold("bfloat16"), dtype=torch.bfloat16)


def world_texts() -> set[str]:
    values = [v for vs in AXES.values() for v in vs]
    return {p for v in values for p in world_erase_prompts(v) + world_preservation(v)} | {"a character"}


def test_turbo_defaults_and_no_world_preset(turbo_scaffold: Callable[..., Path]) -> None:
    model = turbo_scaffold()
    profile = profile_for(model)
    assert isinstance(profile, ZImageTurboProfile)
    for concept, category in (("red", "abstraction"), ("star", "entity"), ("Mira", "celebrity"),
                              ("circle", "entity"), ("filled", "custom")):
        config = resolve(concept, category, preservation=None, model=model)
        assert (config.sample_steps, config.guidance_scale) == (8, 0.0)
        assert (config.height, config.width) == (512, 512), "training runs at the training resolution"
        assert config.erase_prompts == [] and not set(config.preservation) & world_texts(), concept
        assert config.anchor in (None, "a person")  # the celebrity preset's, not the world's "a character"
        assert config.erase_contexts == [] and config.pool_templates == 0.5  # a pool's bases: the category's templates
    expanded = resolve("purple", "abstraction", preservation=["red"], model=model, protect_unnamed=False)
    assert expanded.preservation == ["red"], "a preservation entry is not expanded into world prompts"


def random_artifact(pipe, seed: int, relative: float) -> LoraArtifact:  # noqa: ANN001
    """An artifact whose ΔW is about `relative` times W (Frobenius) in every projection."""
    spec = LoraSpec(rank=4, alpha=4.0)
    lora = GatedLoraModel(pipe.transformer, spec)
    try:
        lora.add_trainable(seed)
        gen = torch.Generator().manual_seed(seed)
        for m in lora.modules.values():
            b = torch.randn(m.lora_B.shape, generator=gen)
            delta = b @ m.lora_A.detach()
            m.lora_B.data = b * (relative * m.base.weight.float().norm() / delta.norm())
        tensors = lora.lora_state()
    finally:
        lora.remove()
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "base_model": base_fingerprint(pipe.transformer),
            "rank": 4, "alpha": 4.0, "gating": "text-only"}
    return LoraArtifact(tensors, meta, f"random-{seed}")


def projections(pipe, patched: PatchedPipeline, prompts: list[str]):  # noqa: ANN001, ANN201
    """(module, input, output) of every patched projection in one transformer call, and the image length."""
    caps = encode_prompts(pipe, prompts)
    seen: list[tuple[TextGatedLinear, torch.Tensor, torch.Tensor]] = []
    model = patched._model  # noqa: SLF001
    assert model is not None
    hooks = [m.register_forward_hook(lambda mod, args, out: seen.append((mod, args[0], out)))
             for m in model.modules.values()]
    gen = torch.Generator().manual_seed(0)
    x = [torch.randn(16, 1, 8, 8, generator=gen).to(torch.bfloat16) for _ in prompts]
    try:
        with torch.no_grad():
            pipe.transformer(x, torch.full((len(prompts),), 0.5), caps, return_dict=False)
    finally:
        for h in hooks:
            h.remove()
    return seen, 32, caps  # 4x4 patches = 16 image tokens, padded to 32


@pytest.mark.parametrize("relative", [1e-2, 1e-3])
def test_bf16_serving_keeps_image_rows_and_the_patch(bf16_pipe, relative: float) -> None:  # noqa: ANN001
    artifacts = [random_artifact(bf16_pipe, seed, relative) for seed in (1, 2)]
    patched = PatchedPipeline(bf16_pipe)
    patched.apply(artifacts)  # the Appendix F average, w = 1/2 each
    try:
        seen, n_img, caps = projections(bf16_pipe, patched, ["a photo of Taylor Swift", "一张周杰伦的照片"])
        deltas = merged_delta(stack_factors(artifacts))
        paths = {id(m): p for p, m in patched._model.modules.items()}  # noqa: SLF001
        assert len(seen) == len(paths)
        for module, inp, out in seen:
            assert out.dtype == torch.bfloat16
            assert torch.equal(out[:, :n_img], module.base(inp)[:, :n_img]), "image rows are the frozen model's"
            w = module.base.weight.float()
            delta = deltas[paths[id(module)]]
            bias = module.base.bias.float() if module.base.bias is not None else 0
            effects, wanted = [], []
            for i, cap in enumerate(caps):
                rows = inp[i, n_img:n_img + len(cap)].float()
                reference = rows @ (w + delta).T + bias
                served = out[i, n_img:n_img + len(cap)].float()
                error = ((served - reference).norm() / reference.norm()).item()
                assert error <= 0.01, f"caption rows {error:.2%} off the fp32 reference"
                effects.append((served - (rows @ w.T + bias)).flatten())
                wanted.append((rows @ delta.T).flatten())
            # The patch's own effect survives the bf16 output: unbiased (gain ~1), not mostly rounded away.
            effect, want = torch.cat(effects), torch.cat(wanted)
            gain = (effect @ want / (want @ want)).item()
            assert 0.9 < gain < 1.1, f"the served patch keeps {gain:.2f} of its effect"
            # What folding W + ΔW into one bf16 matrix would have served instead: much of ΔW rounded away.
            folded = (w + delta).to(torch.bfloat16).float() - w
            assert ((folded - delta).norm() / delta.norm()).item() > 0.1
    finally:
        patched.clear()


def test_localisation_on_the_real_vocabulary(turbo_scaffold: Callable[..., Path]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(turbo_scaffold() / "tokenizer"))

    def found(prompt: str, concept: str) -> list[str]:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True, enable_thinking=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return [tokenizer.decode([ids[i]]) for i in concept_token_positions(tokenizer, prompt, concept)]

    assert "".join(found("a photo of Taylor Swift", "Taylor Swift")).strip() == "Taylor Swift"
    assert "".join(found("a painting by Van Gogh, 1889", "Van Gogh")).strip() == "Van Gogh"
    assert "".join(found("一张周杰伦的照片", "周杰伦")) == "周杰伦"
    assert found("a category of artistic things", "cat") == [] and found("artistic", "art") == []
    assert "".join(found("a cat, then another cat", "cat")).split() == ["cat", "cat"], "every occurrence"
    assert "".join(found("Cafe\u0301 de Flore", "Café")).strip() in ("Café", "Cafe\u0301")  # NFD prompt


def test_attention_mass_is_computed_in_fp32() -> None:
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 2, 8, 32, generator=gen).to(torch.bfloat16) * 4 for _ in range(2))
    valid, concept = torch.ones(1, 8, dtype=torch.bool), torch.tensor([[1, 2]])
    weight = torch.ones(1, 2)
    mass = _chunk_mass(q, k, valid, concept, weight)
    reference = _chunk_mass(q.float(), k.float(), valid, concept, weight)
    assert mass.dtype == torch.float32 and torch.allclose(mass, reference, rtol=1e-6, atol=1e-7)


def test_fingerprint_is_cached_until_a_weight_changes(bf16_pipe) -> None:  # noqa: ANN001
    first = base_fingerprint(bf16_pipe.transformer)
    weight = bf16_pipe.transformer.layers[0].attention.to_q.weight
    before = weight._version
    assert base_fingerprint(bf16_pipe.transformer) == first and weight._version == before
    with torch.no_grad():
        weight.add_(1.0)
    try:
        assert base_fingerprint(bf16_pipe.transformer)["weights_sha256"] != first["weights_sha256"]
    finally:
        with torch.no_grad():
            weight.sub_(1.0)


def test_banks_cover_every_served_schedule(pipe, settings) -> None:  # noqa: ANN001
    embeds = encode_prompts(pipe, ["a red circle"])
    empty = encode_prompts(pipe, [""])[0]
    bank = build_bank(pipe, embeds, empty, None, 4, settings, torch.Generator().manual_seed(0), schedules=[2, 4])
    assert len(bank) == 2 * 2 + 2 * 4
    for steps in (2, 4):
        times = sampler_schedule(pipe, settings.__class__(steps, settings.guidance_scale, settings.height,
                                                          settings.width))[1]
        assert all(torch.isclose(bank.t, t).any() for t in times)


def _error(delta: torch.Tensor, target: torch.Tensor, gram: torch.Tensor) -> float:
    """‖(ΔW − target)·X‖² / n through the Gram matrix G = X·Xᵀ/n."""
    diff = (delta.double() - target.double())
    return float(torch.einsum("oi,ij,oj->", diff, gram, diff))


def test_closed_form_fusion_on_turbo_shapes_in_bf16(bf16_pipe) -> None:  # noqa: ANN001
    # Two erasures of a Turbo-shaped model in bf16, no world: one fused patch reproduces each at full strength on
    # its own prompts' caption rows (where the 1/N average halves it), leaves the kept prompts near the frozen
    # model (where the plain sum adds both), stays at the fixed served rank, and serves images (not NaN-black).
    concepts = {"Taylor Swift": ["a photo of Taylor Swift", "Taylor Swift on stage"],
                "Claude Monet": ["Claude Monet, water lilies", "a painting by Claude Monet"]}
    keep = ["", "a red apple on a table", "年轻的中国女性，身穿红色汉服"]
    artifacts = []
    for seed, concept in enumerate(concepts, start=1):
        artifact = random_artifact(bf16_pipe, seed, 1e-2)
        artifact.metadata["config"], artifact.metadata["concept"] = {"concept": concept}, concept
        artifacts.append(artifact)
    sampling = SamplingSettings(steps=2, guidance_scale=0.0, height=32, width=32)
    fused = fuse_closed_form(bf16_pipe, artifacts, list(concepts.values()), keep, sampling, seeds=(0,))

    paths = sorted(artifacts[0].module_paths)
    assert sorted(fused.module_paths) == paths and fused.metadata["gating"] == "text-only"
    assert all(t.shape[0] <= FUSED_RANK for k, t in fused.tensors.items() if k.endswith("lora_A.weight"))
    assert all(torch.isfinite(t).all() for t in fused.tensors.values())

    served = fused.delta_weights()
    deltas = [a.delta_weights() for a in artifacts]
    kept = caption_grams(bf16_pipe, [], keep, (0,), sampling, paths)
    fused_err = average_err = fused_keep = sum_keep = 0.0
    for i, (artifact, prompts) in enumerate(zip(artifacts, concepts.values(), strict=True)):
        own = caption_grams(bf16_pipe, [artifact], prompts, (0,), sampling, paths)
        for path in paths:
            average = (deltas[0][path] + deltas[1][path]) / 2
            fused_err += _error(served[path], deltas[i][path], own[path])
            average_err += _error(average, deltas[i][path], own[path])
    for path in paths:
        zero = torch.zeros_like(served[path])
        fused_keep += _error(served[path], zero, kept[path])
        sum_keep += _error(deltas[0][path] + deltas[1][path], zero, kept[path])
    assert fused_err < 0.05 * average_err, (fused_err, average_err)
    assert fused_keep < 0.1 * sum_keep, (fused_keep, sum_keep)

    patched = PatchedPipeline(bf16_pipe)
    patched.apply([fused], [1.0])
    try:
        images = generate(bf16_pipe, ["a photo of Taylor Swift", "a red apple on a table"], [0, 1], sampling)
    finally:
        patched.clear()
    assert images.shape == (2, 32, 32, 3) and all(np.asarray(image).std() > 0 for image in images), "not blank"

    # Consolidation from that patch runs on the same shapes in bf16 (its quality: tests/core/test_consolidation.py).
    consolidated = consolidate(bf16_pipe, artifacts, list(concepts.values()), keep, sampling,
                               ConsolidationSettings(steps=2, batch=2, trajectories=1), init=fused)
    assert sorted(consolidated.module_paths) == paths
    assert all(torch.isfinite(t).all() for t in consolidated.tensors.values())
