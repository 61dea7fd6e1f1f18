"""Frozen-model trajectory banks: x_t on the sampler's own path, with frozen targets precomputed.

Eq. 5 and Eq. 8 need x_t "starting from random noise x_T" on the denoising trajectory, and
frozen-model velocities at x_t. Both are computed once, before training, by running the model's
own sampler (flow-matching Euler, the pipeline's sigma schedule and guidance) on seeded noise and
keeping every intermediate state with the frozen outputs the losses need. The training loop then
samples (trajectory, step) pairs from the bank and never runs the frozen model again: one
forward and one backward per step. The CFG sampler computes v(x_t, c) and v(x_t, ∅) anyway, so
both targets come free; an anchor prompt costs one more forward per state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline
from diffusers.pipelines.z_image.pipeline_z_image import calculate_shift, get_default_z_image_sigmas

from zerase.generate import latent_hw
from zerase.sampling import SamplingSettings


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


def sampler_schedule(pipe: ZImagePipeline, settings: SamplingSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigmas with the terminal 0, transformer time inputs), exactly as ZImagePipeline.__call__ sets them."""
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    h, w = latent_hw(pipe, settings)
    mu = calculate_shift((h // 2) * (w // 2), scheduler.config.get("base_image_seq_len", 256),
                         scheduler.config.get("max_image_seq_len", 4096), scheduler.config.get("base_shift", 0.5),
                         scheduler.config.get("max_shift", 1.15))
    scheduler.set_timesteps(sigmas=get_default_z_image_sigmas(settings.steps), mu=mu, device="cpu")
    return scheduler.sigmas.float(), (1000 - scheduler.timesteps.float()) / 1000


@torch.no_grad()
def build_bank(pipe: ZImagePipeline, embeds: list[torch.Tensor], empty: torch.Tensor,
               anchors: list[torch.Tensor] | None, n_trajectories: int, settings: SamplingSettings,
               generator: torch.Generator, batch_size: int = 64,
               schedules: Sequence[int] | None = None) -> TrajectoryBank:
    """Run `n_trajectories` frozen samplings (prompt j % len(embeds)) and keep every state.

    `anchors[i]` is the anchor embedding for prompt i (None: no anchor targets). `schedules`: the step
    counts to sample with, trajectory j taking schedules[j % len] (None: `settings.steps` alone), so a
    patch trains on the timesteps of every schedule that is served.
    """
    transformer = pipe.transformer
    device, dtype = transformer.device, transformer.dtype
    h, w = latent_hw(pipe, settings)
    choices = list(schedules or [settings.steps])
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("states", "t", "prompt", "cond", "uncond", "anchor")}
    for k, steps in enumerate(choices):
        sigmas, times = sampler_schedule(pipe, replace(settings, steps=steps))
        group = torch.arange(k, n_trajectories, len(choices))
        for start in range(0, len(group), batch_size):
            ids = group[start:start + batch_size] % len(embeds)
            n = len(ids)
            x = torch.randn((n, transformer.in_channels, h, w), generator=generator)
            caps = [embeds[i] for i in ids] + [empty] * n + ([anchors[i] for i in ids] if anchors else [])
            copies = len(caps) // n
            for step in range(len(times)):
                t = times[step].expand(n)
                out = transformer(list(x.to(device, dtype).unsqueeze(2).repeat(copies, 1, 1, 1, 1).unbind(0)),
                                  t.repeat(copies).to(device), caps, return_dict=False)[0]
                out = torch.stack(out).squeeze(2).float().cpu()
                cond, uncond = out[:n], out[n:2 * n]
                for key, value in (("states", x), ("t", t), ("prompt", ids), ("cond", cond), ("uncond", uncond)):
                    parts[key].append(value.clone())
                if anchors:
                    parts["anchor"].append(out[2 * n:])
                # The pipeline's guidance: pos + g (pos - neg); then it negates and takes an Euler step.
                pred = cond + settings.guidance_scale * (cond - uncond) if settings.guidance_scale > 0 else cond
                x = x + (sigmas[step + 1] - sigmas[step]) * (-pred)
    return TrajectoryBank(
        states=torch.cat(parts["states"]), t=torch.cat(parts["t"]), prompt=torch.cat(parts["prompt"]),
        cond=torch.cat(parts["cond"]), uncond=torch.cat(parts["uncond"]),
        anchor=torch.cat(parts["anchor"]) if anchors else None,
    )
