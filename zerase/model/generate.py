"""Image generation with a (possibly patched) Z-Image pipeline, at fixed seeds."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

import numpy as np
import torch
from diffusers import ZImagePipeline

from zerase.model.pipeline import encode_prompts_compact
from zerase.model.sampling import SamplingSettings

# A patch that depends on the prompt (zerase.patch.apply.PatchedPipeline.apply_routed) is told each pipeline call's
# prompts before they are encoded, and None after: every image made through `generate`, by the service, its
# evaluation or its red team, is patched the same way. It may return the texts to encode in their place (routed
# serving spells an erased concept as its erasure was trained); None: the prompts as written.
PromptHook = Callable[[Sequence[str] | None], Sequence[str] | None]
_PROMPT_HOOKS: weakref.WeakKeyDictionary[ZImagePipeline, PromptHook] = weakref.WeakKeyDictionary()


def set_prompt_hook(pipe: ZImagePipeline, hook: PromptHook | None) -> None:
    if hook is None:
        _PROMPT_HOOKS.pop(pipe, None)
    else:
        _PROMPT_HOOKS[pipe] = hook


def generate(pipe: ZImagePipeline, prompts: Sequence[str], seeds: Sequence[int],
             settings: SamplingSettings, negative_prompt: str | None = None,
             batch_size: int = 64) -> np.ndarray:
    """One image per (prompt, seed) pair: returns (N, H, W, 3) uint8.

    Each image's noise comes from its own seeded generator, so an image depends only on its
    prompt and seed, never on what else shares the batch.
    """
    if len(prompts) != len(seeds):
        raise ValueError("prompts and seeds must have the same length")
    out = [np.zeros((0, settings.height, settings.width, 3), np.uint8)]
    for i in range(0, len(prompts), batch_size):
        chunk = list(prompts[i:i + batch_size])
        # Encoded here rather than by the pipeline: each distinct text once (the pipeline encodes the shared
        # negative prompt once per image), at the pipeline's fixed padding so a batch changes no feature.
        negatives = [negative_prompt or ""] * len(chunk) if settings.guidance_scale > 0 else []
        hook = _PROMPT_HOOKS.get(pipe)
        texts = list(hook(chunk) or chunk) if hook is not None else chunk
        try:
            features = encode_prompts_compact(pipe, texts + negatives, pad_to_longest=False)
            out.append(sample(pipe, features[:len(chunk)], features[len(chunk):], seeds[i:i + batch_size], settings))
        finally:
            if hook is not None:
                hook(None)
    return np.concatenate(out)


def sample(pipe: ZImagePipeline, features: Sequence[torch.Tensor], negatives: Sequence[torch.Tensor],
           seeds: Sequence[int], settings: SamplingSettings) -> np.ndarray:
    """One pipeline call on caption features (one per seed; `negatives` too, or none without guidance):
    (N, H, W, 3) uint8."""
    device, dtype = pipe.transformer.device, pipe.transformer.dtype
    latents = torch.stack([torch.randn((pipe.transformer.in_channels, *latent_hw(pipe, settings)),
                                       generator=torch.Generator().manual_seed(int(s))) for s in seeds])
    images = pipe(
        prompt_embeds=[f.to(device, dtype) for f in features],
        negative_prompt_embeds=[f.to(device, dtype) for f in negatives],
        height=settings.height,
        width=settings.width,
        num_inference_steps=settings.steps,
        guidance_scale=settings.guidance_scale,
        latents=latents.to(device),
        output_type="np",
    ).images
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def latent_hw(pipe: ZImagePipeline, settings: SamplingSettings) -> tuple[int, int]:
    """The pipeline's own latent size rule (prepare_latents): a multiple of 2 for the 2x2 patches."""
    f = pipe.vae_scale_factor * 2
    return 2 * (settings.height // f), 2 * (settings.width // f)


def image_grid(images: np.ndarray, rows: int, scale: int = 1) -> np.ndarray:
    """Tile (N, H, W, 3) images into `rows` rows (N must be a multiple of rows)."""
    n, h, w, c = images.shape
    cols = n // rows
    grid = images[: rows * cols].reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)
    return grid.repeat(scale, 0).repeat(scale, 1) if scale > 1 else grid
