"""A Z-Image Turbo-shaped pipeline directory with random weights.

The same diffusers/transformers classes, configs and tokenizer as Tongyi-MAI/Z-Image-Turbo (or the small
variant of zerase.turbo.config), so code that loads and drives Turbo can be run without its 20+ GB of
weights. No zerase-profile.json is written: like a downloaded Turbo directory, it is recognised as Turbo.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
from transformers import Qwen3Config, Qwen3Model

from zerase.turbo.config import TurboConfig, turbo_config
from zerase.turbo.tokenizer import build_qwen_tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def build_text_encoder(config: TurboConfig) -> Qwen3Model:
    return Qwen3Model(Qwen3Config(**config.text_encoder))


def build_components(config: TurboConfig, dtype: torch.dtype = torch.float32) -> dict[str, torch.nn.Module]:
    """The three weighted parts at their constructors' random init (the caller seeds).

    Each is drawn in float32, so one seed gives the same weights (up to rounding) in either dtype, and
    cast before the next is built: a full-size bfloat16 build peaks near 29 GB (one part in float32, the
    rest in bfloat16), not the 41 GB of all three in float32.
    (nn.Module.to: diffusers' ModelMixin.to warns about float32-only modules even when there are none.)
    """
    builders = {
        "transformer": lambda: ZImageTransformer2DModel(**config.transformer),
        "text_encoder": lambda: build_text_encoder(config),
        "vae": lambda: AutoencoderKL(**config.vae),
    }
    return {name: torch.nn.Module.to(build(), dtype) for name, build in builders.items()}


def parameter_counts(small: bool) -> dict[str, int]:
    """Each part's parameter count, built on the meta device: no memory, so the full size is fine too."""
    with torch.device("meta"):
        parts = build_components(turbo_config(small))
    return {name: sum(p.numel() for p in part.parameters()) for name, part in parts.items()}


def build_scaffold(out: Path, *, small: bool, dtype: torch.dtype, seed: int) -> Path:
    """Write a ZImagePipeline directory at `out` with weights drawn from `seed`, stored in `dtype`."""
    if dtype not in DTYPES.values():
        raise ValueError(f"dtype {dtype}: float32 or bfloat16")
    config = turbo_config(small)
    torch.manual_seed(seed)
    pipe = ZImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(**config.scheduler),
                          tokenizer=build_qwen_tokenizer(), **build_components(config, dtype))
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(out))
    return out


def describe_scaffold(out: Path) -> dict[str, dict[str, int]]:
    """Each component folder's parameter count (from the safetensors headers) and size on disk."""
    from safetensors import safe_open

    parts: dict[str, dict[str, int]] = {}
    for folder in sorted(p for p in out.iterdir() if p.is_dir()):
        parameters = 0
        for weights in folder.glob("*.safetensors"):
            with safe_open(str(weights), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    parameters += math.prod(f.get_slice(key).get_shape())
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        parts[folder.name] = {"parameters": parameters, "bytes": size}
    return parts
