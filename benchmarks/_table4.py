"""The paper's Table 4 on the world (`python benchmarks/quality.py --table4`): attack success rate (the share
of images in which the probe reads the concept) without attack, under the string attacks (misspelling,
affix, word order, synonym, case; mean over kinds), under Ring-A-Bell and under UnlearnDiffAtk
(zerase.evaluate.redteam), for Z-Erase, Z-Erase with a fixed λ, token zeroing and the unpatched model; `table4.md`
and `table4.json` in --out."""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _quality_methods import AXIS_CATEGORY, METHODS, install_artifact, world_stack

from zerase.baselines.zeroing import TokenZeroing
from zerase.evaluate.plan import Evaluator
from zerase.evaluate.redteam import AttackResult, Install, RedTeamBudget, no_intervention, red_team_intervention
from zerase.model.generate import generate
from zerase.train.erasure import erase
from zerase.train.presets import resolve
from zerase.world.evaluator import concept_prompts, world_attack_prompts
from zerase.world.profile import world_axis

VARIANTS = {"z-erase": METHODS["Z-Erase"].overrides, "fixed λ=1": METHODS["Z-Erase, fixed λ=1"].overrides}

TABLE4_METHODS = ("z-erase", "fixed λ=1", "token zeroing", "unpatched")
TABLE4_COLUMNS = {"no_attack": "no attack", "string_attacks": "string attacks", "ring_a_bell": "Ring-A-Bell",
                  "unlearndiff": "UnlearnDiff"}


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
            category = AXIS_CATEGORY[axis]
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


