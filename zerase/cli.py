"""The core commands: `zerase world build`, `zerase erase`, `zerase generate`.

(The `zerase` console command also carries the service commands, and turns a user's mistake into one
line: see cli/main.py and cli/errors.py.)
"""

from __future__ import annotations

import dataclasses
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

app = typer.Typer(help="Z-Erase: concept erasure for single-stream diffusion transformers.", no_args_is_help=True)
world_app = typer.Typer(help="The bundled tiny world model.", no_args_is_help=True)
app.add_typer(world_app, name="world")
console = Console(stderr=True)

ModelOpt = Annotated[Path | None, typer.Option("--model", help="Pipeline directory (default: the bundled model).")]


class Dtype(StrEnum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


# The same environment variables as the service's settings (ZERASE_DTYPE, ZERASE_DEVICE), so one bf16 path
# runs from the command line and in the service.
DtypeOpt = Annotated[Dtype, typer.Option("--dtype", envvar="ZERASE_DTYPE", help="Weights' dtype.")]
DeviceOpt = Annotated[str, typer.Option("--device", envvar="ZERASE_DEVICE", help="torch device, e.g. cuda.")]


@world_app.command("build")
def world_build(
    out: Annotated[Path, typer.Option(help="Where to write the pipeline directory.")] = Path("var/tiny-world"),
    quick: Annotated[bool, typer.Option(help="Smoke-test build: minutes, low quality, not for committing.")] = False,
    seed: int = 0,
    vae_from: Annotated[Path | None, typer.Option(
        help="Take the VAE of a world built before instead of training one (saves its ~16 min on 2 cores); "
             "world.json records it.")] = None,
    continue_from: Annotated[Path | None, typer.Option(
        help="Train a world built before (same concepts, same seed) for the plan's steps more; keeps its "
             "tokenizer, text encoder, VAE and probe. world.json records the earlier report.")] = None,
    transformer_steps: Annotated[int | None, typer.Option(help="Override the plan's transformer steps.")] = None,
) -> None:
    """Render the world, train tokenizer/VAE/transformer/probe, write a diffusers pipeline directory."""
    import dataclasses

    from zerase.world.build import BuildPlan, build_world

    plan = BuildPlan.quick() if quick else BuildPlan.full()
    if transformer_steps is not None:
        plan = dataclasses.replace(plan, transformer_steps=transformer_steps)
    report = build_world(out, plan, seed=seed, log=console.log,
                         vae_from=vae_from, continue_from=continue_from)
    console.print(f"[green]built[/] {out} in {report['timings']['total_s']:.0f}s; "
                  f"generation accuracy {report['generation_accuracy']}")


scaffold_app = typer.Typer(help="Model-shaped pipeline directories with random weights.", no_args_is_help=True)
app.add_typer(scaffold_app, name="scaffold")


class ScaffoldDtype(StrEnum):
    bfloat16 = "bfloat16"
    float32 = "float32"


@scaffold_app.command("z-image-turbo")
def scaffold_z_image_turbo(
    out: Annotated[Path, typer.Option(help="Where to write the pipeline directory.")],
    small: Annotated[bool, typer.Option(help="Narrow and shallow, for CPU tests; same interfaces.")] = False,
    dtype: Annotated[ScaffoldDtype, typer.Option(help="Weights' dtype.")] = ScaffoldDtype.bfloat16,
    seed: int = 0,
) -> None:
    """Write Z-Image Turbo's configs and Qwen3 tokenizer with random weights: a ZImagePipeline directory."""
    import time

    from zerase.turbo.scaffold import DTYPES, build_scaffold, describe_scaffold

    start = time.monotonic()
    build_scaffold(out, small=small, dtype=DTYPES[dtype.value], seed=seed)
    parts = describe_scaffold(out)
    for name, part in parts.items():
        console.print(f"  {name:<13} {part['parameters']:>14,} parameters  {part['bytes'] / 2**20:>9.1f} MiB")
    total = sum(p["bytes"] for p in parts.values())
    console.print(f"[green]wrote[/] {out} ({'small' if small else 'full-size'} Z-Image Turbo scaffold, "
                  f"{dtype.value}, seed {seed}): {total / 2**20:.1f} MiB in {time.monotonic() - start:.1f}s")


@app.command()
def erase(
    concept: Annotated[str, typer.Argument(help="The concept to erase, e.g. 'red' or 'Claude Monet'.")],
    out: Annotated[Path, typer.Option(help="Artifact path (.safetensors).")],
    preserve: Annotated[list[str] | None, typer.Option(help="A prompt or concept to preserve (repeat), added to "
                                                           "the concept's neighbours and general captions.")] = None,
    only_listed: Annotated[bool, typer.Option(help="Preserve only --preserve, nothing added.")] = False,
    category: Annotated[str, typer.Option(help="Preset: nudity, violence, artistic_style, entity, abstraction, "
                                               "celebrity, custom.")] = "custom",
    anchor: Annotated[str | None, typer.Option(help="Anchor prompt to map the concept to.")] = None,
    epsilon: Annotated[float | None, typer.Option(help="Preservation tolerance ε (default per category).")] = None,
    eta: float = 2.0,
    steps: int = 200,
    rank: int = 4,
    seed: int = 0,
    model: ModelOpt = None,
    dtype: DtypeOpt = Dtype.float32,
    device: DeviceOpt = "cpu",
) -> None:
    """Train a Z-Erase LoRA for CONCEPT and write it to OUT."""
    from zerase.model.pipeline import load_pipeline
    from zerase.train.erasure import StepMetrics
    from zerase.train.erasure import erase as run_erase
    from zerase.train.presets import resolve

    config = resolve(concept, category, preservation=preserve, anchor=anchor, epsilon=epsilon, eta=eta, steps=steps,
                     rank=rank, seed=seed, model=model, protect_unnamed=not only_listed)
    _check_device(device)
    pipe = load_pipeline(model, device, _torch_dtype(dtype))
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("λ={task.fields[lam]:.3f} L_er={task.fields[er]:.4f} L_pr={task.fields[pr]:.5f}"),
               TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"erasing {concept!r}", total=config.steps, lam=0.0, er=0.0, pr=0.0)

        def on_step(m: StepMetrics) -> None:
            progress.update(task, completed=m.step, lam=m.lam, er=m.loss_erase, pr=m.loss_preserve)

        result = run_erase(pipe, config, on_step=on_step)
    result.save(out)
    console.print(f"[green]wrote[/] {out} ({out.stat().st_size} bytes, final λ {result.final_lambda:.4f}, "
                  f"{result.timings['total_s']:.1f}s)")


def _torch_dtype(name: str):  # noqa: ANN202 (torch is imported late: `zerase --help` stays fast)
    import torch

    return getattr(torch, name)


def _check_device(device: str) -> None:
    """A device torch cannot use (a CPU-only build, no GPU, a misspelling) is refused before the model loads,
    named as the user set it; `.to("cuda")` deep in the load said it 115 lines later."""
    import torch

    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError, ValueError) as exc:
        reason = (str(exc).strip() or type(exc).__name__).split(". ")[0][:240]  # torch's messages run long
        raise ValueError(f"--device / ZERASE_DEVICE {device!r}: {reason} (torch {torch.__version__})") from None


def _parse_lora(spec: str) -> tuple[Path, float | None]:
    path, sep, weight = spec.rpartition(":")
    if sep and path and weight.replace(".", "", 1).isdigit():
        return Path(path), float(weight)
    return Path(spec), None


@app.command()
def generate(
    prompt: str,
    out: Annotated[Path, typer.Option(help="A .png file, or a folder when --num-images > 1.")],
    lora: Annotated[list[str] | None, typer.Option(help="FILE[:WEIGHT] of an erasure artifact (repeat).")] = None,
    seed: int = 0,
    num_images: int = 1,
    steps: Annotated[int | None, typer.Option(help="Sampling steps (default: the model's).")] = None,
    size: Annotated[int | None, typer.Option(help="Image height and width (default: the model's).")] = None,
    guidance: Annotated[float | None, typer.Option(help="Guidance scale (default: the model's).")] = None,
    model: ModelOpt = None,
    dtype: DtypeOpt = Dtype.float32,
    device: DeviceOpt = "cpu",
) -> None:
    """Generate images for PROMPT at seeds SEED..SEED+N-1, optionally with erasures applied."""
    from zerase.model.generate import generate as run_generate
    from zerase.model.pipeline import load_pipeline
    from zerase.model.profiles import profile_for
    from zerase.patch.apply import PatchedPipeline
    from zerase.patch.artifact import load_artifact

    settings = profile_for(model).sampling
    settings = dataclasses.replace(
        settings, steps=steps or settings.steps, height=size or settings.height, width=size or settings.width,
        guidance_scale=settings.guidance_scale if guidance is None else guidance)
    _check_device(device)
    pipe = load_pipeline(model, device, _torch_dtype(dtype))
    specs = [_parse_lora(s) for s in lora or []]
    if specs:
        artifacts = [load_artifact(p, pipe) for p, _ in specs]
        weights = None if all(w is None for _, w in specs) else [w if w is not None else 1.0 for _, w in specs]
        PatchedPipeline(pipe).apply(artifacts, weights)
    seeds = list(range(seed, seed + num_images))
    images = run_generate(pipe, [prompt] * num_images, seeds, settings)
    if num_images == 1:
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[0]).save(out)
    else:
        out.mkdir(parents=True, exist_ok=True)
        for s, image in zip(seeds, images):
            Image.fromarray(image).save(out / f"seed-{s}.png")
    console.print(f"[green]wrote[/] {out}")
    typer.echo(json.dumps({"out": str(out), "seeds": seeds, "loras": [str(p) for p, _ in specs]}))


@app.command("eval")
def evaluate(
    lora: Annotated[list[Path], typer.Option(help="Artifact to evaluate (repeat: the first, in a merged set).")],
    seeds: Annotated[int, typer.Option(help="Seeds per prompt.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
    model: ModelOpt = None,
) -> None:
    """Hit rates before/after, read by the model's evaluator: Acc_e, Acc_ir, Ha, drift, attack success."""
    from zerase.evaluate.evaluation import evaluate_artifact
    from zerase.model.pipeline import load_pipeline
    from zerase.model.profiles import profile_for
    from zerase.patch.artifact import load_artifact

    profile = profile_for(model)
    evaluator = profile.evaluator()
    if evaluator is None:
        raise typer.BadParameter(f"no evaluator (concept probe) for the model {profile.name!r}", param_hint="--model")
    pipe = load_pipeline(model)
    first, *rest = [load_artifact(p, pipe) for p in lora]
    report = evaluate_artifact(pipe, first, evaluator, seeds, profile.sampling, extra=rest)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    console.print(f"[bold]{report['concept']}[/] ({report['axis']}), {seeds} seeds per prompt, "
                  f"{report['images']} images in {report['seconds']:.0f}s")
    console.print(f"  Acc_e  {report['acc_e_before']:.3f} -> {report['acc_e']:.3f}   (erased concept, lower is better)")
    console.print(f"  Acc_ir {report['acc_ir_before']:.3f} -> {report['acc_ir']:.3f}   (other concepts)")
    console.print(f"  Ha {report['ha_before']:.3f} -> {report['ha']:.3f}   drift {report['drift']:.4f}")
    for kind, attack in report["attacks"].items():
        console.print(f"  attack {kind:<12} success {attack['before']:.3f} -> {attack['after']:.3f}")
    asr = report["attack_success_rate"]
    console.print(f"  attack {'(all)':<12} success {asr['before']:.3f} -> {asr['after']:.3f}")
