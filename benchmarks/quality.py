"""Erasure quality on the bundled world: Z-Erase against its ablations and baselines, on the same
seeds and concepts (one per axis), as one markdown table plus an image grid.

    python benchmarks/quality.py [--concepts red circle outlined Mira] [--steps 200] [--seeds 8]
                                 [--out benchmarks/quality]

Variants: Z-Erase; Z-Erase with a fixed λ = 1 (no modulation); Table 5's ablations (L_erase
alone; L_erase + L_attn; + L_pr); a naive LoRA on the same layers without text-only gating
(Fig. 3 right); token zeroing at inference (Fig. 3 left); and an ε sweep (Fig. 8).

    python benchmarks/quality.py --table4 [--concepts red circle] [--seeds 4] [--attack-steps 20]

runs the paper's Table 4 alone instead: attack success rate (the share of images in which the
probe reads the concept) without attack, under the string attacks (misspelling, affix, word order,
synonym, case; mean over kinds), under Ring-A-Bell and under UnlearnDiffAtk (zerase.redteam), for
Z-Erase, Z-Erase with a fixed λ, token zeroing and the unpatched model; `table4.md` and
`table4.json` in --out (the other tables' files are left as they are).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from zerase.artifact import LoraArtifact, load_artifact
from zerase.config import EraseConfig
from zerase.erasure import erase
from zerase.evaluation import Evaluator, evaluate_intervention
from zerase.generate import generate, image_grid
from zerase.lora import GatedLoraModel, LoraSpec
from zerase.patching import PatchedPipeline, stack_factors
from zerase.pipeline import load_pipeline
from zerase.presets import resolve
from zerase.profiles import profile_for
from zerase.redteam import AttackResult, Install, RedTeamBudget, no_intervention, red_team_intervention
from zerase.world.evaluator import concept_prompts, world_attack_prompts, world_concepts
from zerase.world.profile import world_axis
from zerase.zeroing import TokenZeroing

VARIANTS: dict[str, dict] = {
    "z-erase": {},
    "fixed λ=1": {"modulation": "fixed", "fixed_lambda": 1.0},
    "L_erase only": {"attn_weight": 0.0, "modulation": "none"},
    "L_erase + L_attn": {"modulation": "none"},
    "L_erase + L_attn + L_pr (λ=1)": {"modulation": "fixed", "fixed_lambda": 1.0},
    "naive LoRA (no gating)": {"gating": "all"},
}
EPSILONS = (1e-3, 1e-2, 1e-1)
BASELINES: dict = {}  # unpatched measurements, shared by every variant of a concept


def install_artifact(pipe, path: Path) -> Callable[[], Callable[[], None]]:
    artifact = load_artifact(path)

    def install() -> Callable[[], None]:
        if artifact.metadata["gating"] == "text-only":
            patched = PatchedPipeline(pipe)
            patched.apply([artifact])
            return patched.clear
        # The naive baseline cannot be served through the gated patcher: apply ΔW to every row.
        model = GatedLoraModel(pipe.transformer, _spec(artifact), text_only=False)
        model.set_factors(stack_factors([artifact], [1.0]))
        return model.remove

    return install


def _spec(artifact: LoraArtifact) -> LoraSpec:
    return LoraSpec(tuple(artifact.metadata["target_modules"]), tuple(artifact.metadata["layers"]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concepts", nargs="+", default=None,
                        help="default: red circle outlined Mira (with --table4: red circle)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/quality"))
    parser.add_argument("--variants", nargs="*", default=None, help=f"subset of {list(VARIANTS)} (default: all)")
    parser.add_argument("--no-zeroing", action="store_true")
    parser.add_argument("--sweep", nargs="*", default=None, help="concepts for the ε sweep (default: the first)")
    parser.add_argument("--table4", "--attacks", action="store_true",
                        help="only Table 4: attack success rates per method (default concepts: red circle)")
    parser.add_argument("--attack-prompts", type=int, default=RedTeamBudget.prompts,
                        help="Table 4: concept prompts each red-team attack optimises")
    parser.add_argument("--attack-steps", type=int, default=RedTeamBudget.steps,
                        help="Table 4: Ring-A-Bell generations / UnlearnDiff optimiser steps")
    args = parser.parse_args()
    if args.table4:
        table4(args)
        return
    args.concepts = args.concepts or ["red", "circle", "outlined", "Mira"]
    pipe, profile, settings, evaluator = world_stack()
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    grid_rows: list[np.ndarray] = []
    with tempfile.TemporaryDirectory() as tmp:
        for concept in args.concepts:
            category = {"colour": "abstraction", "shape": "entity", "style": "artistic_style",
                        "character": "celebrity"}[world_axis(concept) or "colour"]
            extra = {"steps": args.steps} if args.steps else {}
            base = resolve(concept, category, sample_steps=settings.steps, guidance_scale=settings.guidance_scale,
                           height=settings.height, width=settings.width, **extra)
            variants = {name: dataclasses.replace(base, **kw) for name, kw in VARIANTS.items()
                        if args.variants is None or name in args.variants}
            if concept in (args.sweep if args.sweep is not None else args.concepts[:1]):
                variants |= {f"ε={e:g}": dataclasses.replace(base, epsilon=e) for e in EPSILONS}
            show = concept_prompts(world_axis(concept) or "colour", concept).prompts[0]
            seeds = list(range(8))
            grid_rows.append(generate(pipe, [show] * 8, seeds, settings))
            for name, config in variants.items():
                rows.append(run_variant(pipe, evaluator, settings, name, config, Path(tmp), args.seeds, show,
                                        grid_rows))
                write_outputs(args.out, rows, grid_rows, quiet=True)  # partial results survive an interrupted run
                print(json.dumps({k: rows[-1][k] for k in ("concept", "variant", "acc_e", "acc_ir", "ha")}),
                      flush=True)

            def install_zeroing(c: str = concept) -> Callable[[], None]:
                z = TokenZeroing(pipe, c)
                z.prepare([p for g in world_concepts() for p in g.prompts]
                          + [p for ps in world_attack_prompts(c).values() for p in ps])
                return z.remove

            if args.no_zeroing:
                continue
            t = time.monotonic()
            report = evaluate_intervention(pipe, concept, install_zeroing, evaluator, args.seeds, settings,
                                           baseline_cache=BASELINES)
            rows.append(summarise(report, "token zeroing (inference)", 0.0, time.monotonic() - t))
    write_outputs(args.out, rows, grid_rows)


TABLE4_METHODS = ("z-erase", "fixed λ=1", "token zeroing", "unpatched")
TABLE4_COLUMNS = {"no_attack": "no attack", "string_attacks": "string attacks", "ring_a_bell": "Ring-A-Bell",
                  "unlearndiff": "UnlearnDiff"}


def world_stack():  # noqa: ANN201 (pipeline, profile, sampling, evaluator)
    """The bundled world's pipeline, profile, sampling and probe evaluator."""
    pipe = load_pipeline()
    profile = profile_for()
    evaluator = profile.evaluator()
    if evaluator is None:
        raise SystemExit("the bundled model has no concept probe: run `zerase world build` first")
    return pipe, profile, profile.sampling, evaluator


def table4(args: argparse.Namespace) -> None:
    """The paper's Table 4 on the world: for each concept and method, the attack success rate of each attack."""
    pipe, profile, settings, evaluator = world_stack()
    concepts = args.concepts or ["red", "circle"]
    budget = RedTeamBudget(prompts=args.attack_prompts, steps=args.attack_steps)
    seeds = list(range(args.seeds))
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for concept in concepts:
            axis = world_axis(concept) or "colour"
            category = {"colour": "abstraction", "shape": "entity", "style": "artistic_style",
                        "character": "celebrity"}[axis]
            extra = {"steps": args.steps} if args.steps else {}
            base = resolve(concept, category, sample_steps=settings.steps, guidance_scale=settings.guidance_scale,
                           height=settings.height, width=settings.width, **extra)
            prompts = concept_prompts(axis, concept).prompts
            for method in TABLE4_METHODS:
                t = time.monotonic()
                train_s = 0.0
                if method in VARIANTS:
                    result = erase(pipe, dataclasses.replace(base, **VARIANTS[method]))
                    train_s = time.monotonic() - t
                    path = Path(tmp) / f"{concept}-{abs(hash(method))}.safetensors"
                    result.save(path)
                    install = _for_prompts(install_artifact(pipe, path))
                elif method == "token zeroing":
                    install = _zeroing(pipe, concept)
                else:
                    install = no_intervention
                row = {"concept": concept, "method": method,
                       "no_attack": _hit_rate(pipe, evaluator, install, concept, prompts, seeds, settings)}
                kinds = world_attack_prompts(concept)
                row["string_attacks"] = float(np.mean([_hit_rate(pipe, evaluator, install, concept, ps, seeds,
                                                                 settings) for ps in kinds.values()]))
                # Token zeroing against UnlearnDiff: the features of the attacked concept prompts are optimised
                # with zeroing installed for those prompts, so the concept's key columns stay masked (the
                # optimised features keep the prompt's caption length, by which zeroing finds them) and the
                # attack has to carry the concept through the other caption rows, as against an artifact.
                attacks: list[AttackResult] = red_team_intervention(
                    pipe, install, evaluator, concept, prompts=prompts, budget=budget, settings=settings,
                    seeds=seeds)
                for a in attacks:
                    row[a.name] = a.success_rate
                    row[f"{a.name}_unpatched"] = a.success_rate_unpatched
                row |= {"attacks": [a.to_dict() for a in attacks], "train_s": round(train_s, 1),
                        "total_s": round(time.monotonic() - t, 1), "seeds": len(seeds),
                        "budget": dataclasses.asdict(budget)}
                rows.append(row)
                write_table4(args.out, rows, quiet=True)
                print(json.dumps({k: row[k] for k in ("concept", "method", *TABLE4_COLUMNS, "total_s")}), flush=True)
    write_table4(args.out, rows)


def _for_prompts(install: Callable[[], Callable[[], None]]) -> Install:
    return lambda _prompts: install()


def _zeroing(pipe, concept: str) -> Install:
    def install(prompts) -> Callable[[], None]:
        z = TokenZeroing(pipe, concept)
        try:
            z.prepare(list(prompts))
        except BaseException:
            z.remove()
            raise
        return z.remove

    return install


def _hit_rate(pipe, evaluator: Evaluator, install: Install, concept: str, prompts: list[str], seeds: list[int],
              settings) -> float:
    """Share of images, intervention installed, that show the concept: each prompt at every seed. One prompt per
    installation: token zeroing tells prompts apart by caption length, and two may share one."""
    hits = []
    for p in prompts:
        remove = install([p])
        try:
            images = generate(pipe, [p] * len(seeds), seeds, settings)
        finally:
            remove()
        hits += [concept in r for r in evaluator.read(images, [p] * len(seeds))]
    return float(np.mean(hits)) if hits else 0.0


def write_table4(out: Path, rows: list[dict], quiet: bool = False) -> None:
    (out / "table4.json").write_text(json.dumps(rows, indent=2))
    lines = ["| concept | method | " + " | ".join(TABLE4_COLUMNS.values()) + " |", "|" + "---|" * 6]
    for r in rows:
        lines.append(f"| {r['concept']} | {r['method']} | " + " | ".join(f"{r[k]:.2f}" for k in TABLE4_COLUMNS) + " |")
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        if len(mine) > 1:
            lines.append(f"| mean | {method} | "
                         + " | ".join(f"{np.mean([r[k] for r in mine]):.2f}" for k in TABLE4_COLUMNS) + " |")
    (out / "table4.md").write_text("\n".join(lines) + "\n")
    if not quiet:
        print("\n".join(lines))


def run_variant(pipe, evaluator: Evaluator, settings, name: str, config: EraseConfig, tmp: Path, n_seeds: int,
                show: str, grid_rows: list[np.ndarray]) -> dict:
    t = time.monotonic()
    result = erase(pipe, config)
    train_s = time.monotonic() - t
    path = tmp / f"{config.concept}-{len(grid_rows)}-{abs(hash(name))}.safetensors"
    result.save(path)
    install = install_artifact(pipe, path)
    remove = install()
    try:
        grid_rows.append(generate(pipe, [show] * 8, list(range(8)), settings))
    finally:
        remove()
    report = evaluate_intervention(pipe, config.concept, install, evaluator, n_seeds, settings,
                                   baseline_cache=BASELINES)
    return summarise(report, name, train_s, time.monotonic() - t, result.final_lambda)


def summarise(report: dict, name: str, train_s: float, total_s: float, final_lambda: float | None = None) -> dict:
    asr = report["attacks"]  # the mean over attack kinds, as RESULTS.md reports it
    return {
        "concept": report["concept"], "variant": name, "acc_e_before": report["acc_e_before"],
        "acc_e": report["acc_e"], "acc_ir_before": report["acc_ir_before"], "acc_ir": report["acc_ir"],
        "ha": report["ha"], "drift": report["drift"],
        "attack_success": float(np.mean([v["after"] for v in asr.values()])),
        "final_lambda": final_lambda, "train_s": round(train_s, 1), "total_s": round(total_s, 1),
    }


def write_outputs(out: Path, rows: list[dict], grid_rows: list[np.ndarray], quiet: bool = False) -> None:
    (out / "quality.json").write_text(json.dumps(rows, indent=2))
    header = ("| concept | variant | Acc_e before→after | Acc_ir before→after | Ha | drift | attack success "
              "| λ_final | train s |")
    lines = [header, "|" + "---|" * 9]
    for r in rows:
        lam = "" if r["final_lambda"] is None else f"{r['final_lambda']:.3f}"
        lines.append(f"| {r['concept']} | {r['variant']} | {r['acc_e_before']:.2f}→{r['acc_e']:.2f} | "
                     f"{r['acc_ir_before']:.2f}→{r['acc_ir']:.2f} | {r['ha']:.2f} | {r['drift']:.3f} | "
                     f"{r['attack_success']:.2f} | {lam} | {r['train_s']:.0f} |")
    (out / "quality.md").write_text("\n".join(lines) + "\n")
    Image.fromarray(image_grid(np.concatenate(grid_rows), rows=len(grid_rows), scale=3)).save(out / "grid.png")
    if not quiet:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
