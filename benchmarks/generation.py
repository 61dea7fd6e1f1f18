"""Generation latency: unpatched vs 1, 5 and 20 Z-Erase artifacts, and diffusers' own PEFT LoRA
path at equal ranks, all measured side by side in one process.

    python benchmarks/generation.py [--repeats 20] [--batch 1]

Artifacts are random text-gated LoRAs of the default shape (rank 4 on Q/K/V of every main
layer): latency does not depend on what they erase. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from zerase.model.generate import generate
from zerase.model.pipeline import load_pipeline
from zerase.model.profiles import profile_for
from zerase.patch.apply import PatchedPipeline
from zerase.patch.artifact import base_fingerprint, load_artifact
from zerase.patch.lora import GatedLoraModel, LoraSpec
from zerase.train.config import EraseConfig
from zerase.train.erasure import ErasureResult
from zerase.train.presets import model_defaults


def random_artifacts(pipe, n: int, folder: Path, model: Path | None = None) -> list:
    """`n` artifacts with random factors (B ~ N(0, 0.01²)); `model`: the directory `pipe` was loaded from."""
    spec = LoraSpec()
    fingerprint = base_fingerprint(pipe.transformer)
    out = []
    for i in range(n):
        lora = GatedLoraModel(pipe.transformer, spec)
        lora.add_trainable(seed=i)
        state = {k: (torch.randn_like(v) * 0.01 if "lora_B" in k else v) for k, v in lora.lora_state().items()}
        lora.remove()
        config = EraseConfig(**model_defaults(model), concept=f"c{i}", preservation=[], steps=1)
        result = ErasureResult(config, state, spec, fingerprint, cancelled=False, steps_done=1, final_lambda=0.0)
        result.save(folder / f"a{i}.safetensors")
        out.append(load_artifact(folder / f"a{i}.safetensors", pipe))
    return out


def latency(pipe, settings, repeats: int, batch: int) -> list[float]:
    prompts = ["a red circle"] * batch
    generate(pipe, prompts, list(range(batch)), settings)  # warm-up
    times = []
    for r in range(repeats):
        t = time.perf_counter()
        generate(pipe, prompts, [r] * batch, settings)
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--model", default=None)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (more: steadier on a busy machine)")
    args = parser.parse_args()
    pipe = load_pipeline(args.model)
    settings = profile_for(args.model).sampling
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = random_artifacts(pipe, 20, Path(tmp), args.model)
    patched = PatchedPipeline(pipe)
    results: dict[str, list[float]] = {}
    for _round in range(args.rounds):  # interleaved rounds, so drift in the machine's load hits every setup alike
        for n in (0, 1, 5, 20):
            patched.apply(artifacts[:n])
            results.setdefault(f"z-erase x{n}", []).extend(latency(pipe, settings, args.repeats, args.batch))
            patched.clear()
        for n in (1, 20):
            names = [f"a{i}" for i in range(n)]
            for name, a in zip(names, artifacts):
                sd = {f"{k}": v for k, v in a.tensors.items()}
                pipe.transformer.load_lora_adapter(sd, adapter_name=name, prefix=None)
            pipe.transformer.set_adapters(names, [1.0 / n] * n)
            results.setdefault(f"peft x{n}", []).extend(latency(pipe, settings, args.repeats, args.batch))
            pipe.transformer.unload_lora()  # restores the plain Linear modules
    base = statistics.median(results["z-erase x0"])
    print(f"{settings.height}x{settings.width}, {settings.steps} steps, guidance {settings.guidance_scale}, "
          f"batch {args.batch}, {torch.get_num_threads()} threads, {args.rounds * args.repeats} runs each")
    best = min(results["z-erase x0"])
    print(f"{'setup':<14}{'p50 ms':>9}{'p99 ms':>9}{'vs unpatched':>14}{'min ms':>9}{'min vs':>9}")
    for name, ts in results.items():
        ts = sorted(ts)
        p50, p99 = statistics.median(ts), ts[min(len(ts) - 1, int(0.99 * len(ts)))]
        # The minimum is the least disturbed by other load on a shared machine: the intrinsic cost.
        print(f"{name:<14}{p50 * 1000:>9.1f}{p99 * 1000:>9.1f}{p50 / base:>13.3f}x{ts[0] * 1000:>9.1f}"
              f"{ts[0] / best:>8.3f}x")


if __name__ == "__main__":
    main()
