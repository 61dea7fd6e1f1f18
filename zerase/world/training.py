"""Training the tiny world's VAE and transformer (rectified flow, as Z-Image was trained)."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, ZImageTransformer2DModel

Log = Callable[[str], None]


def train_vae(vae: AutoencoderKL, images: torch.Tensor, steps: int, seed: int, batch: int = 64,
              log: Log = print) -> None:
    """images: (N, 3, H, W) in [0, 1]. Reconstruction MSE plus a small KL, as for SD's VAE."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    vae.train()
    for step in range(steps):
        idx = torch.randint(0, len(images), (batch,), generator=gen)
        x = images[idx] * 2 - 1
        posterior = vae.encode(x).latent_dist
        z = posterior.sample(generator=gen)
        recon = vae.decode(z).sample
        loss = F.mse_loss(recon, x) + 1e-6 * posterior.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 200 == 0 or step == steps - 1:
            log(f"vae step {step}/{steps} loss {loss.item():.5f}")
    vae.eval().requires_grad_(False)


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Posterior means of (N, 3, H, W) images in [0, 1]."""
    return torch.cat([vae.encode(images[i:i + batch] * 2 - 1).latent_dist.mean
                      for i in range(0, len(images), batch)])


def shifted_sigmas(u: torch.Tensor, shift: float) -> torch.Tensor:
    """The scheduler's static time shift applied to uniform draws: training sees inference's sigmas."""
    return shift * u / (1 + (shift - 1) * u)


def flow_matching_loss(transformer: ZImageTransformer2DModel, x0: torch.Tensor, caps: list[torch.Tensor],
                       gen: torch.Generator, shift: float) -> torch.Tensor:
    """Rectified flow: x_t = (1 - s) x0 + s noise; the transformer reads t = 1 - s and predicts x0 - noise
    (the pipeline negates its output before the Euler step)."""
    noise = torch.randn(x0.shape, generator=gen)
    sigma = shifted_sigmas(torch.rand(x0.shape[0], generator=gen), shift)
    s = sigma.view(-1, 1, 1, 1)
    x_t = (1 - s) * x0 + s * noise
    out = transformer(list(x_t.unsqueeze(2).unbind(0)), 1 - sigma, caps, return_dict=False)[0]
    pred = torch.stack(out).squeeze(2)
    return F.mse_loss(pred, x0 - noise)


def train_transformer(transformer: ZImageTransformer2DModel, latents: torch.Tensor, caption_ids: torch.Tensor,
                      caption_embeds: list[torch.Tensor], steps: int, seed: int, shift: float, batch: int = 64,
                      lr: float = 1e-3, ema_decay: float = 0.999, time_budget_s: float | None = None,
                      log: Log = print) -> ZImageTransformer2DModel:
    """Train on (latent, caption) pairs; returns the EMA copy of the weights.

    latents: (N, C, h, w), already scaled; caption_ids: (N,) indices into caption_embeds.
    The cosine schedule runs on max(step / steps, elapsed / time_budget_s): on a slow machine
    training ends early but still anneals, so the build's time is bounded and its model usable.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    ema = copy.deepcopy(transformer).requires_grad_(False)
    opt = torch.optim.AdamW(transformer.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.99))
    warmup = max(1, steps // 50)
    start = time.monotonic()

    def progress(step: int) -> float:
        by_time = (time.monotonic() - start) / time_budget_s if time_budget_s else 0.0
        return min(1.0, max(step / steps, by_time))

    transformer.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * progress(step)))
        idx = torch.randint(0, len(latents), (batch,), generator=gen)
        caps = [caption_embeds[int(i)] for i in caption_ids[idx]]
        loss = flow_matching_loss(transformer, latents[idx], caps, gen, shift)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        opt.step()
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), transformer.parameters()):
                pe.lerp_(p, 1 - decay)
        elapsed = time.monotonic() - start
        if step % 100 == 0 or step == steps - 1:
            log(f"transformer step {step}/{steps} loss {loss.item():.4f} ({elapsed:.0f}s)")
        if progress(step + 1) >= 1.0 and step + 1 < steps:
            log(f"transformer: time budget reached at step {step}")
            break
    transformer.eval()
    return ema.eval()
