"""`zerase world build`: render the world, train the parts, write a diffusers pipeline directory."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, ZImagePipeline
from PIL import Image

from zerase.model.generate import image_grid
from zerase.model.pipeline import encode_prompts, load_pipeline
from zerase.model.profiles import PROFILE_FILE
from zerase.model.sampling import SamplingSettings
from zerase.world.components import (
    WorldSizes,
    build_scheduler,
    build_text_encoder,
    build_tokenizer,
    build_transformer,
    build_vae,
)
from zerase.world.concepts import describe, random_scene
from zerase.world.evaluate import world_accuracy
from zerase.world.probe import ConceptProbe, probe_accuracy, train_probe
from zerase.world.render import render
from zerase.world.training import encode_latents, train_transformer, train_vae

Log = Callable[[str], None]
EMPTY_CAPTION_RATE = 0.1


@dataclass(frozen=True)
class BuildPlan:
    n_images: int
    vae_steps: int
    probe_steps: int
    transformer_steps: int
    transformer_budget_s: float
    eval_seeds: int

    @classmethod
    def full(cls) -> BuildPlan:
        return cls(n_images=40_000, vae_steps=1000, probe_steps=800, transformer_steps=4000,
                   transformer_budget_s=1800, eval_seeds=64)

    @classmethod
    def quick(cls) -> BuildPlan:
        return cls(n_images=2_000, vae_steps=60, probe_steps=60, transformer_steps=40,
                   transformer_budget_s=60, eval_seeds=2)


CONTINUE_LR = 3e-4  # a second cosine cycle from a trained model: a third of the first's peak


def build_world(out_dir: Path, plan: BuildPlan, seed: int = 0, log: Log = print,
                vae_from: Path | None = None, continue_from: Path | None = None) -> dict:
    """Build the tiny pipeline into `out_dir` and return its report (also written to world.json).

    vae_from: a world directory whose VAE is taken as it is (the VAE only encodes shapes and colours, so
    a world that adds concepts of the same parts may keep it); its latents' statistics are measured anew.
    continue_from: a world built from the same concepts and seed: its tokenizer, text encoder, VAE and probe are
    kept and its transformer is trained for the plan's steps more, at CONTINUE_LR (a longer schedule in parts)."""
    if continue_from is not None:
        vae_from = continue_from
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    sizes = WorldSizes()
    torch.manual_seed(seed)
    rng = random.Random(seed)

    scenes = [random_scene(rng) for _ in range(plan.n_images)]
    images = torch.from_numpy(np.stack([render(s, rng, sizes.image_size) for s in scenes]))
    images = images.permute(0, 3, 1, 2).float() / 255
    captions = ["" if rng.random() < EMPTY_CAPTION_RATE else describe(s, rng) for s in scenes]
    timings["render_s"] = time.monotonic() - t0
    log(f"rendered {len(scenes)} scenes in {timings['render_s']:.0f}s")

    tokenizer = build_tokenizer([c for c in captions if c], sizes.vocab_size)
    text_encoder = build_text_encoder(sizes, len(tokenizer))
    if continue_from is not None:
        earlier = load_pipeline(continue_from)
        tokenizer, text_encoder = earlier.tokenizer, earlier.text_encoder

    t = time.monotonic()
    if vae_from is None:
        vae = build_vae(sizes)
        train_vae(vae, images, plan.vae_steps, seed, batch=32, log=log)
    else:
        vae = AutoencoderKL.from_pretrained(str(vae_from / "vae")).eval().requires_grad_(False)
        log(f"vae taken from {vae_from}")
    latents = encode_latents(vae, images)
    shift_factor = float(latents.mean())
    scaling_factor = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling_factor, shift_factor=shift_factor)
    timings["vae_s"] = time.monotonic() - t

    transformer = build_transformer(sizes) if continue_from is None else earlier.transformer.requires_grad_(True)
    pipe = ZImagePipeline(scheduler=build_scheduler(), vae=vae, text_encoder=text_encoder,
                          tokenizer=tokenizer, transformer=transformer)
    unique = sorted(set(captions))
    embeds = encode_prompts(pipe, unique)
    index = {c: i for i, c in enumerate(unique)}
    caption_ids = torch.tensor([index[c] for c in captions])

    t = time.monotonic()
    x0 = (latents - shift_factor) * scaling_factor
    ema = train_transformer(transformer, x0, caption_ids, embeds, plan.transformer_steps,
                            seed if continue_from is None else seed + 1, shift=build_scheduler().config.shift,
                            lr=1e-3 if continue_from is None else CONTINUE_LR,
                            time_budget_s=plan.transformer_budget_s, log=log)
    timings["transformer_s"] = time.monotonic() - t
    pipe.register_modules(transformer=ema)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(out_dir))

    t = time.monotonic()

    def vae_round_trip(x: torch.Tensor) -> torch.Tensor:
        return (vae.decode(vae.encode(x * 2 - 1).latent_dist.mean).sample + 1) / 2

    if continue_from is None:
        probe = train_probe(plan.probe_steps, seed, reconstruct=vae_round_trip, log=log)
    else:
        probe = ConceptProbe.load(continue_from / "probe")
    probe.save(out_dir / "probe")
    timings["probe_s"] = time.monotonic() - t

    # Everything below reads the directory back, exactly as a user of the model would.
    t = time.monotonic()
    # The world's own sampling (recorded in world.json, read back by its profile).
    settings = SamplingSettings(steps=8, guidance_scale=1.0, height=sizes.image_size, width=sizes.image_size)
    loaded = load_pipeline(out_dir)
    accuracy, per_character, grid = world_accuracy(loaded, probe, settings, plan.eval_seeds)
    timings["eval_s"] = time.monotonic() - t
    timings["total_s"] = time.monotonic() - t0
    Image.fromarray(image_grid(grid, rows=grid.shape[0] // 8, scale=3)).save(out_dir / "samples.png")
    report = {
        "seed": seed,
        "plan": asdict(plan),
        "sizes": asdict(sizes),
        "sampling": asdict(settings),
        "parameters": {name: sum(p.numel() for p in getattr(loaded, name).parameters())
                       for name in ("transformer", "vae", "text_encoder")},
        "probe_accuracy": {
            "renders": probe_accuracy(probe, 2000, seed + 1),
            "vae_reconstructions": probe_accuracy(probe, 2000, seed + 2, transform=vae_round_trip),
        },
        "generation_accuracy": accuracy,
        "character_accuracy": per_character,
        "vae_from": None if vae_from is None else vae_from.name,
        # What a continued build continued: the earlier report (its plan, timings and accuracy).
        "continued": None if continue_from is None else json.loads((continue_from / "world.json").read_text()),
        "timings": {k: round(v, 1) for k, v in timings.items()},
    }
    (out_dir / "world.json").write_text(json.dumps(report, indent=2))
    # The directory names its plug-in, so the core finds this world's presets and probe (zerase.model.profiles).
    (out_dir / PROFILE_FILE).write_text(json.dumps({"plugin": "zerase.world.profile:WorldProfile"}) + "\n")
    log(json.dumps(report, indent=2))
    return report
