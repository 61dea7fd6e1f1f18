"""GPU section: Z-Erase on the Z-Image Turbo scaffold at its full real shapes (random weights, bf16).

    python benchmarks/gpu.py                          # on a device machine (one H100/H200), ~6 min
    python benchmarks/gpu.py --workdir /scratch/zg    # build (or reuse) the scaffold there
    python benchmarks/gpu.py --sections fidelity,generate
    python benchmarks/gpu.py --smoke                  # anywhere, CPU, toy sizes, well under a minute

No GPU was available when this was written: it has only run in `--smoke` mode, and RESULTS.md has no
GPU figures yet.

The model is `zerase.turbo.scaffold.build_scaffold`: Z-Image Turbo's own classes and configs (6.15B-
parameter transformer, the 4.0B Qwen3 text encoder, FLUX's VAE, the real Qwen tokenizer and scheduler)
with random weights, written as a diffusers directory and loaded with `zerase.model.pipeline.load_pipeline`,
the path a downloaded Turbo takes. **At full size the directory is ~20 GB on disk**: it goes to
`--workdir` (kept, and reused by a later run) or, by default, a temporary directory that is deleted at
the end. The build runs on the GPU when there is one (random init is serial on a CPU; falls back to
the CPU if it fails). `--smoke` builds the small variant instead (`small=True`, same interfaces) and runs
it on the CPU with one thread (toy ops; ~20 s; tests/test_gpu_benchmark_smoke.py runs it): its figures
check the code, not speed.

Sections, each figure printed as soon as it is measured (so a run cut short still reports), in this
order (cheapest and least likely to run out of memory first):

  fidelity  one patched projection (layers.0.attention.to_q) at |dW|/|W| = 1e-2 and 1e-3: folding
            W + dW into one bf16 matrix (relative error of the folded dW, share of W's entries the
            fold leaves unchanged) vs the served unfused path (caption-row outputs of a real transformer
            call vs an fp32 reference); for both also what survives of the patch's own effect
            (out - unpatched vs dW h): its error, its gain (least-squares slope, 1 = kept in full on
            average) and the share of caption-row outputs it leaves unchanged.
  generate  latency of one 1024x1024 image (smoke 64x64), 8 steps, guidance 0 (Turbo's profile),
            median over --repeats after a warm-up, with 0, 1 and 20 random text-gated patches
            (benchmarks/generation.py's `random_artifacts`), and the ratio to unpatched.
  guard     the takedown guard (zerase.serve.guard) at Turbo's scale: calibrating the first concept (which reads
            800 COCO captions through the 4B text encoder once) and each of 19 more, then one /generate
            prompt checked against all 20 (median of 20), as a share of the unpatched 1024x1024 generation
            measured in the generate section (the guard's cost per request: the target is <= 2 %).
            Random weights: detection figures mean nothing here, timings do.
  train     at 512x512 and 1024x1024 (smoke 32x32, 64x64), the profile's training batch (4 erase +
            2 fresh / 2 carried preservation states, each scored with its prompt and with the empty
            one: 12 items a step; smoke 1 + 1): Z-Erase step vs naive LoRA step (ungated, no attention
            term, no lambda), as the median step-to-step time of `erase`'s own history (the measure of
            benchmarks/train_step.py's `per_step_seconds`); peak GPU memory (max_memory_allocated,
            reset before each run) with and without gradient checkpointing, and with and without
            text-encoder offload (`erase(..., offload_text_encoder=False)` keeps it on the GPU; the line
            also gives offloaded peak + text-encoder weights as a cross-check). Two
            peaks per run: the whole `erase` call (includes prompt encoding, when the text encoder is
            on the GPU anyway) and the training loop alone (steps 2+, reset after step 1). A
            configuration that runs out of memory prints "out of memory" and the run goes on.
            Trajectory banks use --trajectories (2; the profile's 16 only lengthen setup, never a step).

Before each section a rough time estimate for one H200 is printed (a-priori, not measured). A
configuration that would start past --deadline seconds (default 480) is skipped and says so, so
the run fits inside a 15-minute device window with room for a rerun.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.transformers.transformer_z_image import SEQ_MULTI_OF
from generation import random_artifacts

from zerase.model.generate import generate
from zerase.model.pipeline import encode_prompts, load_pipeline
from zerase.model.profiles import profile_for
from zerase.model.sampling import SamplingSettings
from zerase.patch.apply import PatchedPipeline, merged_delta, stack_factors
from zerase.patch.artifact import FORMAT, FORMAT_VERSION, LoraArtifact, base_fingerprint
from zerase.patch.lora import GatedLoraModel, LoraSpec, TextGatedLinear
from zerase.train.erasure import erase
from zerase.train.presets import resolve
from zerase.turbo.scaffold import DTYPES, build_scaffold, parameter_counts

SECTIONS = ("fidelity", "generate", "guard", "train")
# Concepts the guard section puts under guard (a real model's kinds: the profile's generic and category templates).
GUARDED = (("Tom Cruise", "celebrity"), ("Van Gogh", "artistic_style"), ("Mickey Mouse", "entity"),
           ("Eiffel Tower", "entity"), ("Taylor Swift", "celebrity"), ("Coca-Cola logo", "entity"),
           ("Claude Monet", "artistic_style"), ("Darth Vader", "entity"), ("Pikachu", "entity"),
           ("Elon Musk", "celebrity"), ("Salvador Dali", "artistic_style"), ("Nike logo", "entity"),
           ("Barack Obama", "celebrity"), ("Spider-Man", "entity"), ("Hello Kitty", "entity"),
           ("Andy Warhol", "artistic_style"), ("Batman", "entity"), ("Mona Lisa", "entity"),
           ("Brad Pitt", "celebrity"), ("Snoopy", "entity"))
PROMPT = ("a studio photograph of a red vintage car parked on a cobblestone street at dusk, warm light from "
          "the shop windows, a woman in a blue coat walking past with an umbrella, reflections on the wet "
          "stones, shallow depth of field, 35mm film")
FIDELITY_PATH = "layers.0.attention.to_q"
GIB = 2**30
GENERATED: dict[str, float] = {}  # the generate section's unpatched median, for the guard section's share

# bank_overrides: how the trajectory banks are sampled (setup only; a step does not depend on it). Full: the
# profile's 8-step schedule and the preset's prompts; smoke: 2 steps, 2 preservation prompts, no shuffles.
FULL = {"train_sizes": (512, 1024), "gen_size": 1024, "erase_batch": 4, "preserve_batch": 2, "repeats": 3,
        "fidelity_latent": 32, "bank_overrides": {}}
SMOKE = {"train_sizes": (32, 64), "gen_size": 64, "erase_batch": 1, "preserve_batch": 1, "repeats": 2,
         "fidelity_latent": 8, "bank_overrides": {"sample_steps": 2, "schedule_steps": [2], "shuffle_variants": 0,
                                                  "preservation": ["a photo of a dog", "a bowl of fruit"]}}
ESTIMATES = {  # one H200, a-priori (FLOP counts and transfer rates), not measured
    "build": "~1-2 min (GPU init, ~20 GB written) + ~0.5-1 min to load",
    "fidelity": "~10 s",
    "generate": "~30 s (12 images at 1024x1024, ~1-1.5 s each, plus 20 artifacts written and read)",
    "guard": "~30 s (800 COCO captions and 20 concepts' prompts through the 4B text encoder, then 20 checks)",
    "train": "~3 min (10 runs of 3 steps; 512x512 ~1-2 s/step, 1024x1024 ~4-6 s/step; runs without "
             "checkpointing may run out of memory quickly)",
}


def say(line: str) -> None:
    print(line, flush=True)


class Clock:
    def __init__(self, deadline: float | None) -> None:
        self.t0 = time.monotonic()
        self.deadline = deadline

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def past_deadline(self) -> bool:
        return self.deadline is not None and self.elapsed() > self.deadline


def is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def sync(device: str) -> None:
    if is_cuda(device):
        torch.cuda.synchronize()


def free_memory(device: str) -> None:
    gc.collect()
    if is_cuda(device):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def reset_peak(device: str) -> None:
    if is_cuda(device):
        free_memory(device)
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / GIB if is_cuda(device) else None


def gib(value: float | None) -> str:
    return "n/a (CPU)" if value is None else f"{value:.1f} GiB"


def module_gib(module: torch.nn.Module) -> float:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()]) / GIB


def oom_message(exc: BaseException) -> str:
    return f"out of memory ({str(exc).splitlines()[0][:160]})"


# --- the model -----------------------------------------------------------------------------------------

BUILT = "zerase-benchmark-scaffold.json"  # written last: a build cut short is never reused


def build(out: Path, *, small: bool, dtype: torch.dtype, build_device: str) -> str:
    """Build the scaffold at `out`, its weights initialised on `build_device`; reuse a finished one of the
    same size and dtype (the full build costs minutes). Returns what was done."""
    stamp = {"small": small, "dtype": str(dtype).removeprefix("torch."), "seed": 0}
    with contextlib.suppress(OSError, ValueError):
        if json.loads((out / BUILT).read_text()) == stamp:
            return "reused"
    if out.exists():
        shutil.rmtree(out)
    try:
        with torch.device(build_device):
            build_scaffold(out, small=small, dtype=dtype, seed=0)
        how = f"built on {build_device}"
    except Exception as exc:  # noqa: BLE001 (any failure of the fast path: fall back to the CPU)
        if build_device == "cpu":
            raise
        say(f"build on {build_device} failed ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
            "building on the CPU")
        shutil.rmtree(out, ignore_errors=True)
        free_memory(build_device)
        build_scaffold(out, small=small, dtype=dtype, seed=0)
        how = "built on cpu (fallback)"
    (out / BUILT).write_text(json.dumps(stamp))
    return how


# --- fidelity ------------------------------------------------------------------------------------------

def one_projection_artifact(pipe, path: str, relative: float, seed: int) -> LoraArtifact:  # noqa: ANN001
    """A rank-4 text-gated artifact on the projection at `path` alone, with ||dW|| = relative * ||W||."""
    layer, name = int(path.split(".")[1]), path.rsplit(".", 1)[1]
    lora = GatedLoraModel(pipe.transformer, LoraSpec(targets=(name,), layers=(layer,), rank=4, alpha=4.0))
    try:
        lora.add_trainable(seed)
        gen = torch.Generator().manual_seed(seed)
        for m in lora.modules.values():
            b = torch.randn(m.lora_B.shape, generator=gen).to(m.lora_B.device)
            delta = m.scale * (b @ m.lora_A.detach())
            m.lora_B.data = b * (relative * m.base.weight.float().norm() / delta.norm())
        tensors = lora.lora_state()
    finally:
        lora.remove()
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "base_model": base_fingerprint(pipe.transformer),
            "rank": 4, "alpha": 4.0, "gating": "text-only"}
    return LoraArtifact(tensors, meta, f"random-{path}-{relative:g}")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@torch.no_grad()
def fidelity(pipe, device: str, latent: int) -> None:  # noqa: ANN001
    caption = encode_prompts(pipe, [PROMPT])
    n_cap = len(caption[0])
    n_img = -(-(latent // 2) ** 2 // SEQ_MULTI_OF) * SEQ_MULTI_OF  # 2x2 patches, padded like the model
    gen = torch.Generator().manual_seed(0)
    transformer = pipe.transformer
    x = [torch.randn(transformer.in_channels, 1, latent, latent, generator=gen).to(device, transformer.dtype)]
    t = torch.full((1,), 0.5, device=device)
    layer, name = int(FIDELITY_PATH.split(".")[1]), FIDELITY_PATH.rsplit(".", 1)[1]
    for relative in (1e-2, 1e-3):
        artifact = one_projection_artifact(pipe, FIDELITY_PATH, relative, seed=1)
        delta = merged_delta(stack_factors([artifact]))[FIDELITY_PATH].to(device)
        patched = PatchedPipeline(pipe)
        patched.apply([artifact])
        seen: list[tuple[torch.Tensor, torch.Tensor]] = []
        module = getattr(transformer.layers[layer].attention, name)
        assert isinstance(module, TextGatedLinear), f"{FIDELITY_PATH} is not patched"
        hook = module.register_forward_hook(lambda mod, args, out, seen=seen: seen.append((args[0], out)))
        try:
            transformer(x, t, caption, return_dict=False)
        finally:
            hook.remove()
            patched.clear()
        base = module.base
        inp, out = seen[0]
        rows_in = inp[0, n_img:n_img + n_cap]
        w_stored = base.weight
        w = w_stored.to(torch.bfloat16).float()  # the bf16 matrix a fold would start from
        bias = base.bias.float() if base.bias is not None else 0.0
        rows = rows_in.float()
        reference = rows @ (w_stored.float() + delta).T + bias  # fp32: the patched projection, exactly
        effect = rows @ delta.T  # what the patch adds
        unpatched = base(rows_in).float()  # the frozen projection as the model computes it
        served = out[0, n_img:n_img + n_cap].float()
        # Folding: one bf16 matrix W + dW, then the projection as a plain bf16 Linear.
        folded_w = (w + delta).to(torch.bfloat16)
        fold_dw_error = rel(folded_w.float() - w, delta)
        unchanged_w = (folded_w == w.to(torch.bfloat16)).float().mean().item()
        folded = F.linear(rows_in.to(torch.bfloat16), folded_w,
                          base.bias.to(torch.bfloat16) if base.bias is not None else None).float()
        shape = "x".join(str(s) for s in w_stored.shape)
        head = f"fidelity |dW|/|W|={relative:.0e} {FIDELITY_PATH} ({shape}, {n_cap} caption rows)"
        say(f"{head} fold: dW error {fold_dw_error:.2%}, W entries unchanged {unchanged_w:.2%}; "
            + output_figures(folded, unpatched, reference, effect))
        say(f"{head} unfused: " + output_figures(served, unpatched, reference, effect)
            + f"; |dW h|/|W h| {(effect.norm() / unpatched.norm()).item():.1e}, model dtype "
            + str(transformer.dtype).removeprefix("torch."))


def output_figures(out: torch.Tensor, unpatched: torch.Tensor, reference: torch.Tensor,
                   effect: torch.Tensor) -> str:
    """How caption-row outputs `out` carry the patch: error vs the fp32 reference; of the patch's effect
    (out - unpatched vs dW h): its error, its gain (least-squares slope; 1 = kept in full, on average)
    and the share of outputs it does not change at all."""
    realized = out - unpatched
    gain = ((realized * effect).sum() / (effect * effect).sum()).item()
    return (f"outputs: error vs fp32 {rel(out, reference):.3%}, patch-effect error {rel(realized, effect):.1%}, "
            f"patch gain {gain:.3f}, outputs unchanged by the patch {(out == unpatched).float().mean().item():.1%}")


# --- generation ----------------------------------------------------------------------------------------

def generation(pipe, device: str, model_dir: Path, size: int, repeats: int, workdir: Path,  # noqa: ANN001
               clock: Clock) -> None:
    settings = SamplingSettings(steps=8, guidance_scale=0.0, height=size, width=size)
    n_cap = len(encode_prompts(pipe, [PROMPT])[0])
    say(f"generate {size}x{size}, {settings.steps} steps, guidance {settings.guidance_scale}: "
        f"{(size // 16) ** 2} image tokens, {n_cap} caption tokens, batch 1")
    t = time.monotonic()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        artifacts = random_artifacts(pipe, 20, Path(tmp), model=model_dir)
    say(f"generate: 20 random artifacts written and loaded in {time.monotonic() - t:.1f} s")
    patched = PatchedPipeline(pipe)
    base: float | None = None
    try:
        for n in (0, 1, 20):
            if clock.past_deadline():
                say(f"generate {n:>2} patches: skipped (past the --deadline of {clock.deadline:.0f} s)")
                continue
            patched.apply(artifacts[:n])
            try:
                generate(pipe, [PROMPT], [0], settings)  # warm-up
                times = []
                for seed in range(repeats):
                    sync(device)
                    t = time.perf_counter()
                    generate(pipe, [PROMPT], [seed + 1], settings)
                    sync(device)
                    times.append(time.perf_counter() - t)
            except torch.cuda.OutOfMemoryError as exc:
                say(f"generate {n:>2} patches: {oom_message(exc)}")
                continue
            finally:
                patched.clear()
            median = statistics.median(times)
            base = median if n == 0 else base
            if n == 0:
                GENERATED["unpatched"] = median
            ratio = f"{median / base:.3f}x unpatched" if base else "unpatched not measured"
            say(f"generate {n:>2} patches: median {median:.4f} s over {repeats} (min {min(times):.4f}, "
                f"max {max(times):.4f}), {ratio}")
    finally:
        patched.clear()
        free_memory(device)


def guard_section(pipe, device: str, model_dir: Path, clock: Clock) -> None:  # noqa: ANN001
    from zerase.serve.guard import PromptGuard
    from zerase.serve.guard_calibration import calibrate_concept

    profile = profile_for(model_dir)
    sync(device)
    t = time.perf_counter()
    guard = PromptGuard.for_pipeline(pipe)
    say(f"guard: background from 64 captions in {time.perf_counter() - t:.2f} s")
    seconds = []
    for i, (concept, category) in enumerate(GUARDED):
        if clock.past_deadline():
            say(f"guard: stopped at {i} concepts (past the --deadline of {clock.deadline:.0f} s)")
            break
        t = time.perf_counter()
        calibration, prototypes = calibrate_concept(guard, profile, concept, category)
        sync(device)
        seconds.append(time.perf_counter() - t)
        guard.add(f"er_{i}", concept, None, calibration.threshold, prototypes)
        if i == 0:
            say(f"guard: first calibration ({concept}, with the COCO reading) {seconds[0]:.2f} s, threshold "
                f"{calibration.threshold:.3f}, {calibration.details['prototypes']} prototypes")
    if len(seconds) > 1:
        say(f"guard: {len(seconds) - 1} more calibrations, median {statistics.median(seconds[1:]):.2f} s each")
    times = []
    for _ in range(21):
        sync(device)
        t = time.perf_counter()
        guard.check(PROMPT)
        sync(device)
        times.append(time.perf_counter() - t)
    check = statistics.median(times[1:])
    base = GENERATED.get("unpatched")
    share = f", {100 * check / base:.2f} % of one unpatched generation ({base:.3f} s)" if base else ""
    say(f"guard: one prompt checked against {len(guard.concepts)} concepts: median {check * 1000:.1f} ms{share}")


# --- training ------------------------------------------------------------------------------------------

def recover(pipe, device: str) -> None:  # noqa: ANN001
    """After an out-of-memory error inside `erase`: its cleanup may itself have failed half-way."""
    free_memory(device)
    transformer = pipe.transformer
    if transformer.gradient_checkpointing:
        transformer.disable_gradient_checkpointing()
    for layer in transformer.layers:
        for name in ("to_q", "to_k", "to_v"):
            module = getattr(layer.attention, name)
            if isinstance(module, TextGatedLinear):  # erase's finally did not get to lora.remove()
                setattr(layer.attention, name, module.base)
    pipe.text_encoder.to(device)  # every parameter back together, wherever the failure left them
    free_memory(device)


@dataclasses.dataclass
class Run:
    step_s: float
    setup_s: float
    peak: float | None  # the whole erase() call
    loop_peak: float | None  # the training loop after step 1


def train_run(pipe, config, device: str, checkpointing: bool, offload: bool) -> Run:  # noqa: ANN001
    """One `erase`: the median step-to-step time of its history (train_step.per_step_seconds' measure)."""
    reset_peak(device)
    loop: dict[str, float | None] = {}

    def on_step(metrics) -> None:  # noqa: ANN001
        if metrics.step == 1 and is_cuda(device):
            loop["whole"] = peak_gib(device)
            torch.cuda.reset_peak_memory_stats()  # from here: the steady training loop alone

    result = erase(pipe, config, gradient_checkpointing=checkpointing, offload_text_encoder=offload, on_step=on_step)
    sync(device)
    loop_peak = peak_gib(device)
    whole = max(loop.get("whole") or 0.0, loop_peak or 0.0) if is_cuda(device) else None
    times = [m.elapsed_s for m in result.history]
    deltas = sorted(b - a for a, b in zip(times, times[1:]))
    return Run(deltas[len(deltas) // 2], result.timings["setup_s"], whole, loop_peak)


def training(pipe, device: str, model_dir: Path, sizes: tuple[int, ...], erase_batch: int, preserve_batch: int,
             trajectories: int, steps: int, bank_overrides: dict[str, Any], clock: Clock) -> None:  # noqa: ANN001
    encoder_gib = module_gib(pipe.text_encoder)
    items = erase_batch + 2 * 2 * preserve_batch
    say(f"train: batch {erase_batch} erase + {preserve_batch} fresh + {preserve_batch} carried preservation "
        f"states x 2 prompts = {items} items a step; {steps} steps a run; banks of {trajectories} trajectories; "
        f"text encoder weights {encoder_gib:.2f} GiB")
    for size in sizes:
        base = resolve("red", "abstraction", model=model_dir, steps=steps, height=size, width=size,
                       erase_batch=erase_batch, preserve_batch=preserve_batch, trajectories=trajectories,
                       **bank_overrides)
        naive = dataclasses.replace(base, gating="all", attn_weight=0.0, modulation="none")
        runs: dict[tuple[str, bool, bool], Run] = {}
        # (label, config, gradient checkpointing, text encoder offloaded); the likeliest to run out of memory last
        plan = [("z-erase", base, True, True), ("naive", naive, True, True), ("z-erase", base, True, False),
                ("z-erase", base, False, True), ("naive", naive, False, True)]
        for label, config, checkpointing, offload in plan:
            head = (f"train {size}x{size} {label:<7} checkpointing {'on ' if checkpointing else 'off'} "
                    f"offload {'on ' if offload else 'off'}")
            if clock.past_deadline():
                say(f"{head}: skipped (past the --deadline of {clock.deadline:.0f} s)")
                continue
            failed = None
            try:
                run = train_run(pipe, config, device, checkpointing, offload)
            except torch.cuda.OutOfMemoryError as exc:
                failed = oom_message(exc)
            if failed is not None:
                recover(pipe, device)
                say(f"{head}: {failed}")
                continue
            runs[(label, checkpointing, offload)] = run
            where = "" if offload or not is_cuda(device) else " (text encoder kept on the GPU)"
            say(f"{head}: step {run.step_s * 1000:.1f} ms, setup {run.setup_s:.1f} s, peak {gib(run.peak)} "
                f"(training loop {gib(run.loop_peak)}){where}")
        summarise(size, runs, encoder_gib, device)
        free_memory(device)


def summarise(size: int, runs: dict[tuple[str, bool, bool], Run], encoder_gib: float, device: str) -> None:
    head = f"train {size}x{size} summary"
    for checkpointing in (True, False):
        z, n = runs.get(("z-erase", checkpointing, True)), runs.get(("naive", checkpointing, True))
        if z and n:
            say(f"{head}: z-erase/naive step ratio {z.step_s / n.step_s:.2f}x "
                f"{'with' if checkpointing else 'without'} checkpointing")
    if not is_cuda(device):
        say(f"{head}: peak memory n/a on the CPU (erase() offloads the text encoder only on an accelerator)")
        return
    on, off = runs.get(("z-erase", True, True)), runs.get(("z-erase", False, True))
    if on and off:
        say(f"{head}: training-loop peak with checkpointing {gib(on.loop_peak)}, without {gib(off.loop_peak)}")
    elif on:
        say(f"{head}: training-loop peak with checkpointing {gib(on.loop_peak)}, without: not measured "
            "(out of memory or skipped)")
    resident = runs.get(("z-erase", True, False))
    if on and resident:
        say(f"{head}: text encoder offloaded {gib(on.loop_peak)}, resident {gib(resident.loop_peak)} measured "
            f", offloaded + encoder weights {gib((on.loop_peak or 0.0) + encoder_gib)} computed")


# --- main ----------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, small scaffold, toy sizes: checks the script")
    parser.add_argument("--device", default=None, help="default: cuda (smoke: cpu, forced)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the scaffold is built (~20 GB at full size) and kept for reuse; "
                             "default: a temporary directory, deleted at the end")
    parser.add_argument("--build-device", default=None, help="where the weights are initialised (default: --device)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    parser.add_argument("--repeats", type=int, default=None, help="timed generations per setting (3; smoke 2)")
    parser.add_argument("--steps", type=int, default=3, help="training steps per run (>= 2: step-to-step times)")
    parser.add_argument("--trajectories", type=int, default=2, help="per bank: enters setup, not the step")
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds after which no new configuration starts (480; smoke: none)")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    device = "cpu" if args.smoke else (args.device or "cuda")
    if is_cuda(device) and not torch.cuda.is_available():
        parser.error("no CUDA device here: run with --smoke, or on a device machine")
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if unknown := set(sections) - set(SECTIONS):
        parser.error(f"unknown sections {sorted(unknown)}; of {', '.join(SECTIONS)}")
    if args.steps < 2:
        parser.error("--steps must be at least 2")
    repeats = args.repeats or sizes["repeats"]
    dtype = DTYPES[args.dtype]
    if args.smoke:  # toy ops: one thread is as fast, and does not spin against other jobs on a shared CPU
        torch.set_num_threads(1)
    clock = Clock(args.deadline if args.deadline is not None else (None if args.smoke else 480.0))
    estimate = (lambda section: "") if args.smoke else (lambda section: f" [estimate {ESTIMATES[section]}]")

    counts = parameter_counts(small=args.smoke)
    card = torch.cuda.get_device_name(device) if is_cuda(device) else "cpu"
    say(f"device {card}, dtype {args.dtype}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}; "
        f"scaffold {'small (smoke)' if args.smoke else 'full Z-Image Turbo shapes'}: "
        + ", ".join(f"{name} {n / 1e9:.3f}B" for name, n in counts.items()) + " parameters")
    say(f"sections: {', '.join(s for s in SECTIONS if s in sections)}{estimate('build')}")

    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zerase-gpu-")))
        workdir.mkdir(parents=True, exist_ok=True)
        model_dir = workdir / f"turbo-{'small' if args.smoke else 'full'}-{args.dtype}"
        t = time.monotonic()
        how = build(model_dir, small=args.smoke, dtype=dtype, build_device=args.build_device or device)
        free_memory(device)
        say(f"scaffold {how} in {time.monotonic() - t:.1f} s at {model_dir}")
        t = time.monotonic()
        pipe = load_pipeline(model_dir, device, dtype)
        sync(device)
        loaded = f", {torch.cuda.memory_allocated() / GIB:.1f} GiB on the GPU" if is_cuda(device) else ""
        say(f"loaded in {time.monotonic() - t:.1f} s ({profile_for(model_dir).name} profile){loaded}")

        if "fidelity" in sections:
            say(f"section fidelity{estimate('fidelity')}")
            run_section("fidelity", device, fidelity, pipe, device, sizes["fidelity_latent"])
        if "generate" in sections:
            say(f"section generate{estimate('generate')}")
            run_section("generate", device, generation, pipe, device, model_dir, sizes["gen_size"], repeats,
                        workdir, clock)
        if "guard" in sections:
            say(f"section guard{estimate('guard')}")
            run_section("guard", device, guard_section, pipe, device, model_dir, clock)
        if "train" in sections:
            say(f"section train{estimate('train')}")
            run_section("train", device, training, pipe, device, model_dir, sizes["train_sizes"],
                        sizes["erase_batch"], sizes["preserve_batch"], args.trajectories, args.steps,
                        sizes["bank_overrides"], clock)
    say(f"total {clock.elapsed():.1f} s")


def run_section(name: str, device: str, body: Callable[..., None], *args: Any) -> None:
    """A section that runs out of memory where it is not caught itself says so; the next one still runs."""
    t = time.monotonic()
    try:
        body(*args)
    except torch.cuda.OutOfMemoryError as exc:
        say(f"{name}: {oom_message(exc)}")
        free_memory(device)
    say(f"section {name} took {time.monotonic() - t:.1f} s")


if __name__ == "__main__":
    main()
