"""UnlearnDiffAtk (Zhang et al., 2024, "To Generate or Not? Safety-Driven Unlearned Diffusion Models Are
Still Easy To Generate Unsafe Images"): a white-box attack that optimises the erased model's text input
so that its denoising prediction matches a target that shows the concept.

UnlearnDiffAtk optimises a few prepended prompt tokens so that the unlearned model denoises noisy
versions of an image of the concept; the image's own noise is the target. Here the target is the
original model's prediction at states x_t of its own sampling trajectory on the concept prompt,

    min_δ  E_{x_t, t} || v_{θ+Δθ}(x_t, t, e + δ) - v_θ(x_t, t, e) ||²,

e the concept prompt's caption features. A Z-Erase ΔW acts on caption rows only, so the caption
features ARE its attack surface: δ perturbs them all (optionally plus a few free rows appended, the
stand-in for UnlearnDiffAtk's free tokens), in units of the features' RMS so one learning rate suits
the tiny world and Qwen's hidden states alike. Adam moves each entry by about `lr` per step at most,
so `lr x steps` bounds the perturbation: unbounded, features can always be found that undo a
caption-row ΔW, and the attack would measure nothing. The attack's output is features, not text:
images come from `prompt_embeds`. The CFG-negative branch (the empty prompt) is left as the pipeline computes
it; only the conditional prediction is matched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import ZImagePipeline

from zerase.evaluate.redteam.common import Install, RedTeamBudget, installed
from zerase.model.pipeline import encode_prompts_compact
from zerase.model.sampling import SamplingSettings
from zerase.train.trajectories import TrajectoryBank, build_bank


@dataclass(frozen=True)
class UnlearnDiffAttack:
    sources: list[str]  # the concept prompts attacked
    features: list[torch.Tensor]  # (L_i + free_tokens, D) each, detached, the pipeline's dtype and device
    negative: torch.Tensor  # the empty prompt's features, for CFG
    history: list[float]  # the objective on each step's states, before that step's update
    objective_before: float  # on every bank state, at δ = 0
    objective_after: float  # on every bank state, at the optimised δ


def _objective(pipe: ZImagePipeline, bank: TrajectoryBank, idx: torch.Tensor,
               captions: Sequence[torch.Tensor]) -> torch.Tensor:
    transformer = pipe.transformer
    device, dtype = transformer.device, transformer.dtype
    x = bank.states[idx].to(device, dtype).unsqueeze(2)
    caps = [captions[int(p)].to(dtype) for p in bank.prompt[idx]]
    out = transformer(list(x.unbind(0)), bank.t[idx].to(device), caps, return_dict=False)[0]
    return F.mse_loss(torch.stack(out).squeeze(2).float(), bank.cond[idx].to(device))


def _full_objective(pipe: ZImagePipeline, bank: TrajectoryBank, captions: Sequence[torch.Tensor],
                    batch: int) -> float:
    with torch.no_grad():
        parts = [(len(idx), _objective(pipe, bank, idx, captions).item())
                 for idx in torch.arange(len(bank)).split(batch)]
    return sum(n * v for n, v in parts) / len(bank)


def unlearndiff(pipe: ZImagePipeline, install: Install, prompts: Sequence[str], settings: SamplingSettings,
                budget: RedTeamBudget = RedTeamBudget()) -> UnlearnDiffAttack:
    """Optimise the caption features of the first `budget.prompts` prompts against the intervention `install`
    puts in place (for these prompts; removed on return), `budget.steps` Adam steps at `budget.lr`.

    The targets come from the model as it is when called: call it on the unpatched pipeline.
    """
    sources = list(prompts)[:budget.prompts]
    if not sources:
        raise ValueError("no prompt to attack")
    transformer = pipe.transformer
    device = transformer.device
    gen = torch.Generator().manual_seed(budget.seed)
    *feats, empty = encode_prompts_compact(pipe, [*sources, ""])
    bank = build_bank(pipe, feats, empty, None, budget.trajectories * len(sources), settings, gen,
                      batch_size=max(1, budget.states))
    base = [f.float() for f in feats]
    # Free rows start as copies of the caption's last row (the template's closing token): neutral text.
    base = [torch.cat([b, b[-1:].expand(budget.free_tokens, -1)]) for b in base]
    rms = [b.pow(2).mean().sqrt().clamp_min(1e-6) for b in base]
    deltas = [torch.zeros_like(b, requires_grad=True) for b in base]
    opt = torch.optim.Adam(deltas, lr=budget.lr)
    # On an accelerator (6B parameters, 1024 px states) recompute activations instead of storing them.
    checkpointing = device.type != "cpu" and not transformer.gradient_checkpointing
    history: list[float] = []
    with installed(install, sources):
        before = _full_objective(pipe, bank, base, budget.states)
        if checkpointing:
            transformer.enable_gradient_checkpointing()
        try:
            with torch.enable_grad():
                for _ in range(budget.steps):
                    idx = torch.randperm(len(bank), generator=gen)[:budget.states]
                    loss = _objective(pipe, bank, idx, [b + r * d for b, r, d in zip(base, rms, deltas)])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    history.append(loss.item())
        finally:
            if checkpointing:
                transformer.disable_gradient_checkpointing()
        attacked = [(b + r * d).detach() for b, r, d in zip(base, rms, deltas)]
        after = _full_objective(pipe, bank, attacked, budget.states)
    dtype = transformer.dtype
    return UnlearnDiffAttack(sources, [a.to(device, dtype) for a in attacked], empty, history, before, after)
