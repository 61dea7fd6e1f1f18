"""Training cost: a Z-Erase step vs a naive LoRA step on the same model and batch, side by side,
and the time and peak memory of a default erasure from start to artifact.

    python benchmarks/train_step.py [--steps 30] [--model DIR] [--defaults red:abstraction Mira:celebrity]

Prints numbers; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import tempfile
import time
from pathlib import Path

import torch

from zerase.model.pipeline import load_pipeline
from zerase.model.profiles import profile_for
from zerase.train.erasure import erase
from zerase.train.presets import resolve


def per_step_seconds(pipe, config, **options) -> float:
    """Median step time, from the loop's own timestamps (setup excluded); `options` go to `erase`."""
    result = erase(pipe, config, **options)
    times = [m.elapsed_s for m in result.history]
    deltas = sorted(b - a for a, b in zip(times, times[1:]))
    return deltas[len(deltas) // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--model", default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--defaults", nargs="*", default=["red:abstraction", "Mira:celebrity"],
                        help="CONCEPT:CATEGORY erasures timed at their defaults, start to artifact")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    pipe = load_pipeline(args.model)
    s = profile_for(args.model).sampling
    base = resolve("red", "abstraction", steps=args.steps, sample_steps=s.steps, guidance_scale=s.guidance_scale,
                   height=s.height, width=s.width)
    # Naive: the same batch through an ungated LoRA, plain MSE, no attention term, no λ.
    naive = dataclasses.replace(base, gating="all", attn_weight=0.0, modulation="none")
    rows = {"z-erase": [], "naive": []}
    for _ in range(args.rounds):  # interleaved, so drift of the machine hits both alike
        rows["z-erase"].append(per_step_seconds(pipe, base))
        rows["naive"].append(per_step_seconds(pipe, naive))
    z, n = min(rows["z-erase"]), min(rows["naive"])
    print(f"step time  z-erase {z * 1000:.1f} ms   naive LoRA {n * 1000:.1f} ms   ratio {z / n:.2f}x "
          f"(batch: {base.erase_batch} erase + {2 * base.preserve_batch}x2 preservation items, "
          f"{torch.get_num_threads()} threads)")

    for request in args.defaults:  # each category's default settings (presets.CATEGORY_SETTINGS) differ in cost
        concept, category = request.split(":")
        default = resolve(concept, category, sample_steps=s.steps, guidance_scale=s.guidance_scale,
                          height=s.height, width=s.width)
        t0 = time.monotonic()
        result = erase(pipe, default)
        with tempfile.TemporaryDirectory() as tmp:
            result.save(Path(tmp) / "erasure.safetensors")
            size = (Path(tmp) / "erasure.safetensors").stat().st_size
        total = time.monotonic() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"default erasure of {concept} ({category}: {default.steps} steps, null_space {default.null_space}, "
              f"refresh_every {default.refresh_every}): {total:.1f} s start to artifact "
              f"(setup {result.timings['setup_s']:.1f} s), {total / default.steps * 1000:.0f} ms/step overall, "
              f"peak RSS {peak_mb:.0f} MB, artifact {size} bytes, final λ {result.final_lambda:.4f}")


if __name__ == "__main__":
    main()
