"""Frozen-model trajectory banks: x_t on the sampler's own path, with frozen targets precomputed.

Eq. 5 and Eq. 8 need x_t "starting from random noise x_T" on the denoising trajectory, and
frozen-model velocities at x_t. Both are computed once, before training, by running the model's
own sampler (flow-matching Euler, the pipeline's sigma schedule and guidance) on seeded noise and
keeping every intermediate state with the frozen outputs the losses need. The training loop then
samples (trajectory, step) pairs from the bank and never runs the frozen model again: one
forward and one backward per step. The CFG sampler computes v(x_t, c) and v(x_t, ∅) anyway, so
both targets come free; an anchor prompt costs one more forward per state.

On-policy banks (`frozen` given, EraseConfig.refresh_every): the states come from sampling with the
transformer as it is now (the LoRA being trained), so training sees where the *erased* model goes after
its first step; the targets at those states are still the frozen model's, computed with the LoRA set
aside. That costs the policy's two forwards per state on top of the frozen ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
from diffusers.pipelines.z_image.pipeline_z_image import calculate_shift, get_default_z_image_sigmas

from zerase.model.generate import latent_hw
from zerase.model.sampling import SamplingSettings


@dataclass
class TrajectoryBank:
    """N = trajectories x steps states. Targets are raw transformer outputs (the pipeline negates them)."""

    states: torch.Tensor  # (N, C, h, w) x_t
    t: torch.Tensor  # (N,) transformer time input, 1 - sigma
    prompt: torch.Tensor  # (N,) index of the conditioning prompt
    cond: torch.Tensor  # (N, C, h, w) v(x_t, c)
    uncond: torch.Tensor  # (N, C, h, w) v(x_t, ∅)
    anchor: torch.Tensor | None  # (N, C, h, w) v(x_t, c_anchor) or None

    def __len__(self) -> int:
        return len(self.states)

    def __add__(self, other: TrajectoryBank) -> TrajectoryBank:
        """Both banks' states in one (prompt indices must refer to the same prompt list)."""
        if (self.anchor is None) != (other.anchor is None):
            raise ValueError("one bank has anchor targets and the other has none")
        anchor = None if self.anchor is None or other.anchor is None else torch.cat([self.anchor, other.anchor])
        return TrajectoryBank(states=torch.cat([self.states, other.states]), t=torch.cat([self.t, other.t]),
                              prompt=torch.cat([self.prompt, other.prompt]), cond=torch.cat([self.cond, other.cond]),
                              uncond=torch.cat([self.uncond, other.uncond]), anchor=anchor)


def sampler_schedule(pipe: ZImagePipeline, settings: SamplingSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigmas with the terminal 0, transformer time inputs), exactly as ZImagePipeline.__call__ sets them."""
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    h, w = latent_hw(pipe, settings)
    mu = calculate_shift((h // 2) * (w // 2), scheduler.config.get("base_image_seq_len", 256),
                         scheduler.config.get("max_image_seq_len", 4096), scheduler.config.get("base_shift", 0.5),
                         scheduler.config.get("max_shift", 1.15))
    scheduler.set_timesteps(sigmas=get_default_z_image_sigmas(settings.steps), mu=mu, device="cpu")
    return scheduler.sigmas.float(), (1000 - scheduler.timesteps.float()) / 1000


def raw_outputs(transformer: ZImageTransformer2DModel, caps: list[torch.Tensor], x: torch.Tensor,
                t: torch.Tensor) -> torch.Tensor:
    """Raw outputs at the n states `x` for each caption in `caps` (len(caps) = k·n: the states repeated k times)."""
    copies = len(caps) // len(x)
    out = transformer(list(x.to(transformer.device, transformer.dtype).unsqueeze(2).repeat(copies, 1, 1, 1, 1)
                           .unbind(0)), t.repeat(copies).to(transformer.device), caps, return_dict=False)[0]
    return torch.stack(out).squeeze(2).float().cpu()


@torch.no_grad()
def build_bank(pipe: ZImagePipeline, embeds: list[torch.Tensor], empty: torch.Tensor,
               anchors: list[torch.Tensor] | None, n_trajectories: int, settings: SamplingSettings,
               generator: torch.Generator, batch_size: int = 64,
               schedules: Sequence[int] | None = None,
               frozen: Callable[[], AbstractContextManager[None]] | None = None,
               prompt_ids: torch.Tensor | None = None, follow_anchor: bool = False) -> TrajectoryBank:
    """Run `n_trajectories` samplings (prompt j % len(embeds), or prompt_ids[j]) and keep every state.

    `anchors[i]` is the anchor embedding for prompt i (None: no anchor targets). `schedules`: the step
    counts to sample with, trajectory j taking schedules[j % len] (None: `settings.steps` alone), so a
    patch trains on the timesteps of every schedule that is served. `frozen`: sample with the transformer
    as it is, and compute the targets inside `frozen()` (the trained LoRA set aside); None: all frozen.
    `follow_anchor`: the sampler steps along the anchor's velocity instead of the prompt's (the path the erased
    model should take), the targets kept as they are.
    """
    if follow_anchor and not anchors:
        raise ValueError("follow_anchor needs anchor prompts")
    transformer = pipe.transformer
    h, w = latent_hw(pipe, settings)
    choices = list(schedules or [settings.steps])
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("states", "t", "prompt", "cond", "uncond", "anchor")}
    for k, steps in enumerate(choices):
        sigmas, times = sampler_schedule(pipe, replace(settings, steps=steps))
        group = torch.arange(k, n_trajectories, len(choices))
        for start in range(0, len(group), batch_size):
            chosen = group[start:start + batch_size]
            ids = chosen % len(embeds) if prompt_ids is None else prompt_ids[chosen]
            n = len(ids)
            x = torch.randn((n, transformer.in_channels, h, w), generator=generator)
            caps = [embeds[i] for i in ids] + [empty] * n + ([anchors[i] for i in ids] if anchors else [])

            for step in range(len(times)):
                t = times[step].expand(n)
                if frozen is None:
                    out = policy = raw_outputs(transformer, caps, x, t)
                else:
                    policy = raw_outputs(transformer, caps[:2 * n], x, t)  # where the model being trained goes
                    with frozen():
                        out = raw_outputs(transformer, caps, x, t)  # what the frozen model says there
                cond, uncond = out[:n], out[n:2 * n]
                for key, value in (("states", x), ("t", t), ("prompt", ids), ("cond", cond), ("uncond", uncond)):
                    parts[key].append(value.clone())
                if anchors:
                    parts["anchor"].append(out[2 * n:])
                # The pipeline's guidance: pos + g (pos - neg); then it negates and takes an Euler step.
                p_cond, p_uncond = (out[2 * n:] if follow_anchor else policy[:n]), policy[n:2 * n]
                pred = (p_cond + settings.guidance_scale * (p_cond - p_uncond) if settings.guidance_scale > 0
                        else p_cond)
                x = x + (sigmas[step + 1] - sigmas[step]) * (-pred)
    return TrajectoryBank(
        states=torch.cat(parts["states"]), t=torch.cat(parts["t"]), prompt=torch.cat(parts["prompt"]),
        cond=torch.cat(parts["cond"]), uncond=torch.cat(parts["uncond"]),
        anchor=torch.cat(parts["anchor"]) if anchors else None,
    )
