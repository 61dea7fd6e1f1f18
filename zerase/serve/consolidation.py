"""Consolidation: a set of erasures distilled into one text-gated LoRA of fixed rank, trained jointly.

The closed form (zerase.serve.fusion) fits one linear map per projection to caption-row inputs collected once; but a
change in one layer moves the inputs of every layer after it, and the fit never sees that. Consolidation
trains the served patch end to end instead, on the model's own outputs, with Z-Erase's losses:

- erase samples: states the frozen model reaches on each erasure's prompts (grouped as the closed form groups
  them: a prompt naming two erased concepts belongs to both), the target being the model's output there with
  the erasures the prompt names applied at full strength (weight 1 each, as each is served alone);
- kept samples (Eq. 8): states on the kept prompts, the frozen model's conditional and unconditional outputs.

    L = mean_erase ‖v_student − v_teacher‖² + keep_weight · mean_kept (‖v − v_frozen(c)‖² + ‖v − v_frozen(∅)‖²)

It starts from `init` (the closed-form patch, when given), so it refines what the closed form found instead of
starting from zero. The student has a fixed rank, so serving costs the same for any N.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from diffusers import ZImagePipeline

from zerase.model.pipeline import encode_prompts
from zerase.model.sampling import SamplingSettings
from zerase.patch.apply import stack_factors
from zerase.patch.artifact import LoraArtifact
from zerase.patch.lora import GatedLoraModel, LoraSpec
from zerase.serve.fusion import FUSED_RANK, fused_metadata, prompt_groups
from zerase.train.trajectories import TrajectoryBank, build_bank, raw_outputs


@dataclass(frozen=True)
class ConsolidationSettings:
    rank: int = FUSED_RANK
    # Adam moves every factor by about lr from the first step: at 5e-3 it first undid the closed-form patch it
    # starts from; at 1e-3 it improved on it within 300 steps (about a minute on the world, 2 cores).
    steps: int = 300
    lr: float = 1e-3
    batch: int = 8  # erase samples per step, and as many kept states (each scored with its prompt and with ∅)
    trajectories: int = 2  # sampled per prompt, for the erase and the kept banks
    keep_weight: float = 1.0
    seed: int = 0


def consolidate(pipe: ZImagePipeline, artifacts: Sequence[LoraArtifact], erase_prompts: Sequence[Sequence[str]],
                keep_prompts: Sequence[str], sampling: SamplingSettings,
                settings: ConsolidationSettings = ConsolidationSettings(), *, init: LoraArtifact | None = None,
                on_step: Callable[[int, float, float], None] | None = None) -> LoraArtifact:
    """One text-gated LoRA of `settings.rank` serving every artifact at full strength (the module's docstring).
    `erase_prompts[i]`: erasure i's concept prompts; `keep_prompts`: what must stay as the frozen model draws
    it. `on_step(step, erase loss, kept loss)` after each update."""
    if not artifacts:
        raise ValueError("nothing to consolidate")
    started = time.monotonic()
    transformer = pipe.transformer
    gen = torch.Generator().manual_seed(settings.seed)
    paths = sorted({p for a in artifacts for p in a.module_paths})
    groups = list(prompt_groups(artifacts, erase_prompts).items())
    texts = [p for _, prompts in groups for p in prompts]
    group_of = torch.tensor([g for g, (_, prompts) in enumerate(groups) for _ in prompts])
    keep = list(dict.fromkeys(keep_prompts)) or [""]
    encoded = encode_prompts(pipe, [*texts, *keep, ""])
    erase_caps, keep_caps, empty = encoded[:len(texts)], encoded[len(texts):-1], encoded[-1]
    erase_bank = build_bank(pipe, erase_caps, empty, None, settings.trajectories * len(texts), sampling, gen)
    keep_bank = build_bank(pipe, keep_caps, empty, None, settings.trajectories * len(keep), sampling, gen)

    spec = LoraSpec(tuple(sorted({p.rsplit(".", 1)[1] for p in paths})),
                    tuple(sorted({int(p.split(".")[1]) for p in paths})), settings.rank, float(settings.rank))
    model = GatedLoraModel(transformer, spec)
    try:
        teacher = _teacher(model, artifacts, groups, group_of, erase_bank, erase_caps)
        params = model.add_trainable(settings.seed)
        if init is not None:
            _start_from(model, init)
        opt = torch.optim.AdamW(params, lr=settings.lr)
        device = transformer.device
        for step in range(settings.steps):
            e = torch.randint(0, len(erase_bank), (settings.batch,), generator=gen)
            k = torch.randint(0, len(keep_bank), (settings.batch,), generator=gen)
            x = torch.cat([erase_bank.states[e], keep_bank.states[k], keep_bank.states[k]])
            t = torch.cat([erase_bank.t[e], keep_bank.t[k], keep_bank.t[k]])
            caps = ([erase_caps[int(i)] for i in erase_bank.prompt[e]]
                    + [keep_caps[int(i)] for i in keep_bank.prompt[k]] + [empty] * len(k))
            targets = torch.cat([teacher[e], keep_bank.cond[k], keep_bank.uncond[k]]).to(device)
            out = transformer(list(x.to(device, transformer.dtype).unsqueeze(2).unbind(0)), t.to(device), caps,
                              return_dict=False)[0]
            per_item = F.mse_loss(torch.stack(out).squeeze(2).float(), targets, reduction="none").flatten(1).mean(1)
            n = len(e)
            loss_erase = per_item[:n].mean()
            loss_keep = (per_item[n:2 * n] + per_item[2 * n:]).mean()
            opt.zero_grad(set_to_none=True)
            (loss_erase + settings.keep_weight * loss_keep).backward()
            opt.step()
            if on_step is not None:
                on_step(step + 1, loss_erase.item(), loss_keep.item())
        tensors = model.lora_state()  # scale alpha/rank = 1: B·A is ΔW as trained
    finally:
        model.remove()
    meta = fused_metadata(artifacts, paths, settings.rank, {
        "method": "consolidated", **asdict(settings), "init": (init.metadata.get("fusion") or {}).get("method")
        if init is not None else None, "seconds": round(time.monotonic() - started, 2)})
    return LoraArtifact(tensors, meta, "fused")


@torch.no_grad()
def _teacher(model: GatedLoraModel, artifacts: Sequence[LoraArtifact],
             groups: Sequence[tuple[frozenset[int], list[str]]], group_of: torch.Tensor, bank: TrajectoryBank,
             caps: Sequence[torch.Tensor], batch_size: int = 64) -> torch.Tensor:
    """Per erase state, the model's output with the erasures its prompt names applied at weight 1 each."""
    out = torch.empty_like(bank.cond)
    state_group = group_of[bank.prompt]
    try:
        for g, (named, _) in enumerate(groups):
            model.set_factors(stack_factors([artifacts[j] for j in sorted(named)], [1.0] * len(named)))
            idx = torch.nonzero(state_group == g).flatten()
            for chunk in idx.split(batch_size):
                out[chunk] = raw_outputs(model.transformer, [caps[int(i)] for i in bank.prompt[chunk]],
                                         bank.states[chunk], bank.t[chunk])
    finally:
        model.set_factors({})
    return out


@torch.no_grad()
def _start_from(model: GatedLoraModel, init: LoraArtifact) -> None:
    """The trainable factors set to `init`'s (its rank must be the model's; paths it lacks start at zero)."""
    for path, m in model.modules.items():
        assert m.lora_A is not None and m.lora_B is not None
        key = f"{path}.lora_A.weight"
        if key not in init.tensors:
            m.lora_B.zero_()
            continue
        a, b = init.tensors[key].float(), init.tensors[f"{path}.lora_B.weight"].float() * init.scale
        if a.shape != m.lora_A.shape:
            raise ValueError(f"{path}: init rank {a.shape[0]} is not the consolidation rank {m.lora_A.shape[0]}")
        m.lora_A.copy_(a)
        m.lora_B.copy_(b / m.scale)
