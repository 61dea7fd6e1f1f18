"""GPU section: Z-Erase at Z-Image Turbo's real transformer shape, random weights, bf16.

    python benchmarks/gpu.py                      # on a device machine: dim 3840, 30 layers, 30 heads
    python benchmarks/gpu.py --smoke              # seconds on a CPU: the same code at a toy shape

The transformer is `ZImageTransformer2DModel` at its real configuration (random weights: no
machine here can download the real ones); tokenizer, text encoder, VAE and scheduler are the
bundled tiny world's. Two changes follow from them and do not change the cost: `in_channels`
is the tiny VAE's latent channels (4, the real model has 16: the patch embedder only) and
`cap_feat_dim` its text encoder's width (the caption embedder only). The tiny VAE downsamples by 4,
so a 512x512 image gives the 128x128 latent, i.e. 4,096 image tokens, of a 1024x1024 image on the
real model; the prompt is ~128 caption tokens.

Measures (each printed as soon as it is known, so a run cut short still reports):
Z-Erase step vs naive LoRA step (same batch), peak GPU memory with and without gradient
checkpointing, and generation latency at 8 steps with 0 and 20 erasure artifacts applied.
Prepared to fit in ~8 minutes on one H100; run it only where a device machine is lent.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch
from diffusers import ZImageTransformer2DModel
from generation import random_artifacts
from train_step import per_step_seconds

from zerase.generate import generate
from zerase.patching import PatchedPipeline
from zerase.pipeline import load_pipeline
from zerase.presets import resolve
from zerase.sampling import SamplingSettings

PROMPT = ("a studio photograph of a red circle and a blue square on a grey gradient background, outlined, next to "
          "Mira the character, with a yellow triangle and a green star, filled, in the style of a poster, "
          "seen from above in soft light, a purple outlined square beside Toko and Zed the characters")


def real_shape_pipeline(args: argparse.Namespace):  # noqa: ANN201 (a diffusers pipeline)
    pipe = load_pipeline()  # tokenizer, text encoder, VAE, scheduler of the tiny world, on the CPU
    config = dict(pipe.transformer.config)
    config.update(dim=args.dim, n_layers=args.layers, n_refiner_layers=2, n_heads=args.heads, n_kv_heads=args.heads,
                  # head dim = sum(axes_dims): 128 = 32 + 48 + 48 at the real shape; the tiny world's otherwise
                  axes_dims=[32, 48, 48] if args.dim // args.heads == 128 else list(pipe.transformer.config.axes_dims),
                  axes_lens=[1024, 512, 512])
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    torch.manual_seed(0)
    with torch.device(args.device):
        transformer = ZImageTransformer2DModel(**config)
    pipe.transformer = transformer.to(args.device, getattr(torch, args.dtype)).eval().requires_grad_(False)
    pipe.vae.to(args.device)
    return pipe


def peak_gb(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--dim", type=int, default=3840)
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--heads", type=int, default=30)
    parser.add_argument("--size", type=int, default=512, help="image side; the tiny VAE downsamples by 4")
    parser.add_argument("--steps", type=int, default=4, help="training steps per timed run")
    parser.add_argument("--batch", type=int, default=2, help="erase batch = preservation half-batch")
    parser.add_argument("--trajectories", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="generations per setting")
    parser.add_argument("--smoke", action="store_true", help="a toy shape on the CPU, to check the script")
    args = parser.parse_args()
    if args.smoke:
        args.device, args.dtype, args.dim, args.layers, args.heads, args.size = "cpu", "float32", 64, 2, 2, 64
    t0 = time.monotonic()
    pipe = real_shape_pipeline(args)
    n_params = sum(p.numel() for p in pipe.transformer.parameters())
    card = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"{card}: transformer dim {args.dim}, {args.layers} layers, {args.heads} heads, {n_params / 1e9:.2f}B "
          f"parameters, {args.dtype}; built in {time.monotonic() - t0:.0f} s", flush=True)
    sampling = SamplingSettings(steps=8, guidance_scale=0.0, height=args.size, width=args.size)
    tokens = len(pipe.tokenizer(PROMPT).input_ids)
    image_tokens = (args.size // pipe.vae_scale_factor // 2) ** 2
    print(f"image {args.size}x{args.size} -> {image_tokens} image tokens; caption {tokens} tokens", flush=True)

    base = dataclasses.replace(
        resolve("red", "abstraction", steps=args.steps, sample_steps=sampling.steps, guidance_scale=0.0,
                height=args.size, width=args.size),
        erase_batch=args.batch, preserve_batch=args.batch, trajectories=args.trajectories,
        erase_prompts=[PROMPT], preservation=[PROMPT.replace("red", "blue")])
    naive = dataclasses.replace(base, gating="all", attn_weight=0.0, modulation="none")
    for checkpointing in (True, False):
        label = "with" if checkpointing else "without"
        try:
            reset_peak(args.device)
            z = per_step_seconds(pipe, base, gradient_checkpointing=checkpointing)
            z_peak = peak_gb(args.device)
            reset_peak(args.device)
            n = per_step_seconds(pipe, naive, gradient_checkpointing=checkpointing)
            print(f"{label} gradient checkpointing: z-erase step {z * 1000:.0f} ms (peak {z_peak:.1f} GiB), naive "
                  f"LoRA step {n * 1000:.0f} ms (peak {peak_gb(args.device):.1f} GiB), ratio {z / n:.2f}x; batch "
                  f"{args.batch} erase + {2 * args.batch}x2 preservation items", flush=True)
        except torch.cuda.OutOfMemoryError as exc:
            print(f"{label} gradient checkpointing: out of memory ({str(exc).splitlines()[0]})", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        artifacts = random_artifacts(pipe, 20, Path(tmp))
        patched = PatchedPipeline(pipe)
        for n in (0, 20):
            patched.apply(artifacts[:n]) if n else patched.clear()
            generate(pipe, [PROMPT], [0], sampling)  # warm-up
            times = []
            for seed in range(args.repeats):
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                t = time.perf_counter()
                generate(pipe, [PROMPT], [seed], sampling)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            print(f"generation, 8 steps, {n:>2} artifacts: median {statistics.median(times):.2f} s over "
                  f"{args.repeats}", flush=True)
        patched.clear()
    print(f"total {time.monotonic() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
