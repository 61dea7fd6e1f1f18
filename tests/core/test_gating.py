"""Eq. 4: ΔW reaches caption rows only; image-row projections are exactly the frozen model's."""

from __future__ import annotations

import pytest
import torch

from zerase.model.generate import generate
from zerase.model.pipeline import encode_prompts
from zerase.model.profiles import profile_for
from zerase.patch.lora import GatedLoraModel, LoraSpec, TextGatedLinear

PROMPTS = ["a red circle", "Mira", "a picture of an outlined purple star that is quite large indeed"]


# A LoRA in training; served patches as stacked factors (rank 4); served at rank 80 on this 128-wide model,
# where caption rows get their own fp32 W + ΔW.
@pytest.mark.parametrize("lora_kind", ["trainable", "served rank 4", "served rank 80"])
@pytest.mark.parametrize("latent_hw", [(16, 16), (8, 24)])
def test_random_lora_changes_text_rows_only(pipe, latent_hw, lora_kind):
    transformer = pipe.transformer
    caps = encode_prompts(pipe, PROMPTS)
    assert len({len(c) for c in caps}) == 3, "prompts must have different token lengths"
    lora = GatedLoraModel(transformer, LoraSpec(rank=4))
    try:
        gen = torch.Generator().manual_seed(0)
        if lora_kind == "trainable":
            lora.add_trainable(seed=1)
            for m in lora.modules.values():
                with torch.no_grad():
                    m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=gen))
        else:
            rank = int(lora_kind.rsplit(" ", 1)[1])
            lora.set_factors({path: (torch.randn(rank, m.base.in_features, generator=gen),
                                     torch.randn(m.base.out_features, rank, generator=gen) * 0.1)
                              for path, m in lora.modules.items()})
            assert all((m.text_weight is not None) == (rank == 80) for m in lora.modules.values())
        seen: list[tuple[TextGatedLinear, torch.Tensor, torch.Tensor]] = []
        hooks = [m.register_forward_hook(lambda mod, args, out: seen.append((mod, args[0], out)))
                 for m in lora.modules.values()]
        x = [torch.randn(4, 1, *latent_hw, generator=gen) for _ in PROMPTS]
        with torch.no_grad():
            transformer(x, torch.full((3,), 0.5), caps, return_dict=False)
        for h in hooks:
            h.remove()
        assert len(seen) == len(lora.modules)
        n_img = (latent_hw[0] // 2) * (latent_hw[1] // 2)
        n_img += (-n_img) % 32
        for module, inp, out in seen:
            frozen = module.base(inp)
            assert torch.equal(out[:, :n_img], frozen[:, :n_img]), "image rows must be bit-identical"
            for i, cap in enumerate(caps):
                text = slice(n_img, n_img + len(cap))
                assert not torch.allclose(out[i, text], frozen[i, text]), "caption rows must change"
    finally:
        lora.remove()


def test_zero_initialised_lora_leaves_output_bit_identical(pipe):
    settings = profile_for().sampling
    before = generate(pipe, PROMPTS, [3, 4, 5], settings)
    lora = GatedLoraModel(pipe.transformer, LoraSpec())
    try:
        lora.add_trainable(seed=0)  # B = 0
        during = generate(pipe, PROMPTS, [3, 4, 5], settings)
    finally:
        lora.remove()
    after = generate(pipe, PROMPTS, [3, 4, 5], settings)
    assert (before == during).all()
    assert (before == after).all()


def test_omni_layout_is_refused(pipe):
    lora = GatedLoraModel(pipe.transformer, LoraSpec())
    try:
        lora.add_trainable(seed=0)
        with pytest.raises(NotImplementedError):
            pipe.transformer([[torch.randn(4, 1, 16, 16)]], torch.ones(1), [[torch.randn(5, 64)]])
    finally:
        lora.remove()
