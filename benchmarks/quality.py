"""Erasure quality on the bundled world: Z-Erase against the paper's baselines (Tables 1–3 rows), every one
inside the stream-disentangled framework (benchmarks/_quality_methods.py), on shared evaluation seeds and
shared unpatched images: two concepts per axis of the world, three training seeds each, reported per axis
as mean ± spread (sample standard deviation over training seeds), the issue's targets marked where missed.

    OMP_NUM_THREADS=1 python benchmarks/quality.py [--concepts red purple circle star outlined filled Mira Zed]
        [--methods ...] [--train-seeds 3] [--seeds 8] [--steps 200] [--recipe paper|rich] [--length 1000]
        [--out benchmarks/quality]
    python benchmarks/quality.py --fast --out DIR   # CI: one concept, 2 steps, one seed, the sampled evaluation
    python benchmarks/quality.py --merge DIR DIR ... --out DIR  # one table from runs split by concept
    python benchmarks/quality.py --table --out DIR  # the table from every cell in DIR/cells, running nothing
    python benchmarks/quality.py --table4 ...       # the paper's Table 4 alone (benchmarks/_table4.py)

Metrics (zerase.evaluate.evaluation, read by the world's probe): Acc_e, the share of the concept's images that still
show it; Acc_ir drop, the fall of the other concepts' hit rate; coherence, the share of the concept's
images that still show a clean world object (a colour, shape and style each read with probability >= 0.5, and
the renderer's drawing of that reading explaining >= half the image's object: "erased into another object" vs
"into mush"; cells measured before that check are rerun after the missing ones, their coherence left out of
the table until then); attack success, the mean over string-attack kinds of the
share of attack images showing the concept; Ha = Acc_ir − Acc_e. `--length N` adds Z-Erase trained for N
steps (the training-length study: quality and wall time). Writes quality.md, quality.json, grid.png (per
concept: the unpatched model, then each method at training seed 0, same 8 seeds) to --out, after every run.

The full protocol is longer than a session, so each cell (concept × method × training seed) is written to
--out/cells/ as soon as it is done and skipped when it is there (if measured on this build of the world: each
cell records the model's weights hash): run the same command again to continue. The
table is built from every cell there, the cells still missing named in its notes (the grid shows this run's).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from _quality_methods import (
    DEFAULT_METHODS,
    METHODS,
    RECIPES,
    REFERENCE,
    install_artifact,
    install_routed,
    method_config,
    strengthen_as_a_job_does,
    world_stack,
)
from _quality_report import write_outputs
from PIL import Image

from zerase.baselines.uce import uce_erase
from zerase.baselines.zeroing import TokenZeroing
from zerase.evaluate.evaluation import evaluate_intervention
from zerase.evaluate.redteam import RedTeamBudget
from zerase.evaluate.strength import SEARCH as STRENGTH_SEARCH
from zerase.model.generate import generate
from zerase.patch.artifact import base_fingerprint
from zerase.serve.served_patch import FALLBACK_KEEP_WEIGHT
from zerase.train.erasure import erase
from zerase.world.evaluator import (
    COHERENCE_METRIC,
    EVALUATION_PROMPTS,
    concept_prompts,
    world_attack_prompts,
    world_concepts,
)
from zerase.world.profile import world_axis

CONCEPTS = ("red", "purple", "circle", "star", "outlined", "filled", "Mira", "Zed")
# Trained at every --train-seeds seed (issue 24's protocol); the rest at seed 0 alone, unless named in --repeat.
# The concept-differential target lost clearly on red over 3 seeds (Acc_e 0.60 ± 0.10, Ha 0.32 against Z-Erase's
# 0.00 and 0.90): one seed from then on, as issue 24 asks. On-policy banks led the characters at one seed (Ha 0.90)
# and lost the kept concepts elsewhere (drop 0.08-0.17): paired with the null-space constraint they got 3 seeds.
# Preserving the preset alone (no unnamed prior) lost clearly over 3 seeds on the composed prompts (drop 0.12 against
# the null-space default's 0.02, Ha 0.67 against 0.75): one seed on the current evaluation.
REPEATED = ("Z-Erase", "Z-Erase, null-space", "Z-Erase, null-space, on-policy",
            "Z-Erase, null-space 0.999", "Z-Erase, null-space 0.999, on-policy", "Z-Erase, defaults", "ESD-u", "UCE")
GRID_SEEDS = list(range(8))
BASELINES: dict = {}  # unpatched measurements, shared by every method and seed of a concept


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concepts", nargs="+", default=None, help=f"default: {' '.join(CONCEPTS)}")
    parser.add_argument("--methods", nargs="+", default=None, help=f"of {list(METHODS)}; default: all but ablations")
    parser.add_argument("--train-seeds", type=int, default=3)
    parser.add_argument("--repeat", nargs="*", default=list(REPEATED),
                        help="methods trained at every training seed; the others at seed 0 only")
    parser.add_argument("--seeds", type=int, default=8, help="evaluation seeds per prompt")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the presets')")
    parser.add_argument("--recipe", choices=list(RECIPES), default="paper", help="training data of every method")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=JSON",
                        help="EraseConfig overrides for every trained method, e.g. refresh_every=25")
    parser.add_argument("--length", type=int, nargs="*", default=[], help="also Z-Erase at these step counts")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/quality"))
    parser.add_argument("--fast", action="store_true", help="CI: checks the harness, not the numbers")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="write one table to --out from these runs' outputs (e.g. concepts split over two cores)")
    parser.add_argument("--table", action="store_true",
                        help="only rebuild the table from the cells in --out/cells, naming the missing ones")
    parser.add_argument("--table4", "--attacks", action="store_true", help="only the paper's Table 4")
    parser.add_argument("--attack-prompts", type=int, default=RedTeamBudget.prompts,
                        help="Table 4: concept prompts each red-team attack optimises")
    parser.add_argument("--attack-steps", type=int, default=RedTeamBudget.steps,
                        help="Table 4: Ring-A-Bell generations / UnlearnDiff optimiser steps")
    return parser.parse_args()


def cell_path(out: Path, concept: str, method: str, seed: int) -> Path:
    safe = method.replace(" ", "_").replace(",", "").replace("/", "-")
    return out / "cells" / f"{concept}__{safe}__s{seed}.json"


def main() -> None:
    args = parse()
    if args.table4:
        from _table4 import table4

        table4(args)
        return
    if args.merge:
        merge(args.merge, args.out)
        return
    extra = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    recipe = dict(RECIPES[args.recipe])
    full = True
    if args.fast:  # every method and code path once, at toy sizes: a few seconds each
        args.concepts = args.concepts or ["red"]
        args.train_seeds, args.seeds, args.steps, full = 1, 2, args.steps or 2, False
        GRID_SEEDS[2:] = []
    concepts = args.concepts or list(CONCEPTS)
    methods = list(args.methods or DEFAULT_METHODS) + [f"Z-Erase, {n} steps" for n in args.length]
    notes = [f"Recipe {args.recipe}: {recipe or 'the paper prompts, frozen bank'}{' (shrunk: --fast)' * args.fast}; "
             f"{args.steps or 'preset'} steps; {args.seeds} evaluation seeds ({'full' if full else 'sampled'} "
             f"protocol); training seeds 0..{args.train_seeds - 1} for {', '.join(args.repeat)}, seed 0 for the "
             f"rest; overrides {extra or 'none'}."]
    grid_rows: list[np.ndarray] = []
    started = time.monotonic()
    def seeds_of(method: str) -> int:
        return args.train_seeds if method in args.repeat or method not in METHODS else 1

    wanted = [(c, m, s) for c in concepts for m in methods for s in range(seeds_of(m))]
    # A cell measured on another build of the world is not this model's: it is run again (and replaced).
    # --table reads every cell there, as it finds them.
    pipe, _profile, settings, evaluator = world_stack()
    model = base_fingerprint(pipe.transformer)["weights_sha256"][:12]
    cells = {w: cell for w in wanted if cell_path(args.out, *w).exists()
             and ((cell := json.loads(cell_path(args.out, *w).read_text())).get("model") == model or args.table)}

    def table_rows() -> list[dict]:
        return [_current(cells[w]) for w in wanted if w in cells]

    def missing_note() -> list[str]:
        missing = [w for w in wanted if w not in cells]
        stale = [w for w in wanted if w in cells and _stale(cells[w])]
        composed = [w for w in wanted if w in cells and _composed_only(cells[w])]
        fallback = [w for w in wanted if w in cells and _earlier_fallback(cells[w])]
        search = [w for w in wanted if w in cells and _earlier_search(cells[w])]
        return ([f"Cells still missing ({len(missing)} of {len(wanted)}): "
                 + ", ".join(f"{c}/{m}/s{s}" for c, m, s in missing)] if missing else []) + (
                [f"Cells whose coherence was read by the probe alone, left out of that column until rerun "
                 f"({len(stale)}): " + ", ".join(f"{c}/{m}/s{s}" for c, m, s in stale)] if stale else []) + (
                [f"Cells measured on the composed prompts alone, before the evaluation asked for the short form "
                 f"(\"a square\", \"a blue shape\"): their figures leave that prompt out until rerun "
                 f"({len(composed)} of {len(cells)})."] if composed else []) + (
                [f"Cells judged with an earlier routed fallback, before its kept term was weighted "
                 f"{FALLBACK_KEEP_WEIGHT:g} (rerun by the next run): "
                 + ", ".join(f"{c}/{m}/s{s}" for c, m, s in fallback)] if fallback else []) + (
                ["Cells served at a strength found by an earlier search than today's (zerase.evaluate.strength.SEARCH: "
                 f"{STRENGTH_SEARCH}; rerun by the next run): " + ", ".join(f"{c}/{m}/s{s}" for c, m, s in search)]
                 if search else [])
    if args.table:  # every cell there, whichever run wrote it; nothing is run
        write_outputs(args.out, table_rows(), [], REFERENCE,
                      _baselines(methods), [f"Built from {args.out / 'cells'} (--table): each cell at the settings "
                                            "of the run that wrote it."] + missing_note())
        return
    with tempfile.TemporaryDirectory() as tmp:
        # Missing cells first, then those measured before the current coherence check or evaluation prompts.
        for concept, redo in [(c, False) for c in concepts] + [(c, True) for c in concepts]:
            axis = world_axis(concept) or "colour"
            show = concept_prompts(axis, concept).prompts[0]

            def done(name: str, seed: int, concept: str = concept, redo: bool = redo) -> bool:
                return (concept, name, seed) in cells and not (redo and _redo(cells[(concept, name, seed)]))
            if all(done(m, s) for m in methods for s in range(seeds_of(m))):
                continue  # every cell of this concept is done
            grid_rows.append(generate(pipe, [show] * len(GRID_SEEDS), GRID_SEEDS, settings))
            for name in methods:
                steps = args.steps
                if name not in METHODS:  # "Z-Erase, N steps"
                    steps = int(name.split(", ")[1].split()[0])
                for seed in range(seeds_of(name)):
                    if done(name, seed):
                        continue
                    row = run(pipe, evaluator, settings, name, concept, seed, steps, recipe, extra, Path(tmp),
                              args.seeds, full, grid_rows if seed == 0 else None, show, args.fast) | {
                        "axis": axis, "model": model}
                    cells[(concept, name, seed)] = row
                    cell_path(args.out, concept, name, seed).parent.mkdir(parents=True, exist_ok=True)
                    cell_path(args.out, concept, name, seed).write_text(json.dumps(row, indent=1))
                    write_outputs(args.out, table_rows(), grid_rows, REFERENCE, _baselines(methods),
                                  notes + missing_note(), quiet=True)
                    print(json.dumps({k: row[k] for k in ("concept", "method", "train_seed", "acc_e", "acc_ir", "ha",
                                                          "coherence", "attack_success", "train_s")}), flush=True)
                    if METHODS[_base(name)].kind == "zeroing":  # nothing trained: the other seeds are the same run
                        cells.update({(concept, name, s): row | {"train_seed": s} for s in range(1, seeds_of(name))})
                        break
    notes.append(f"This run: {time.monotonic() - started:.0f} s.")
    write_outputs(args.out, table_rows(), grid_rows, REFERENCE, _baselines(methods), notes + missing_note())


def _stale(row: dict) -> bool:
    """Measured before the coherence check it would get today (its other figures still stand)."""
    return row.get("coherence_metric") != COHERENCE_METRIC


def _composed_only(row: dict) -> bool:
    """Measured before the world's evaluation prompts included each concept's short form."""
    return row.get("evaluation_prompts") != EVALUATION_PROMPTS


def _earlier_fallback(row: dict) -> bool:
    """Judged as served with a routed fallback made otherwise than today's (zerase.serve.served_patch)."""
    served = METHODS[_base(row["method"])].served
    return served == "as served" and row.get("fallback_keep_weight") != FALLBACK_KEEP_WEIGHT


def _earlier_search(row: dict) -> bool:
    """Served at a strength found by an earlier strength search than today's (zerase.evaluate.strength)."""
    return METHODS[_base(row["method"])].strength and row.get("strength_search") != STRENGTH_SEARCH


def _redo(row: dict) -> bool:
    return _stale(row) or _composed_only(row) or _earlier_fallback(row) or _earlier_search(row)


def _current(row: dict) -> dict:
    """The row as the table shows it: a stale coherence is left out rather than mixed with today's."""
    return row | {"coherence_before": None, "coherence": None} if _stale(row) else row


def merge(dirs: list[Path], out: Path) -> None:
    """One quality table from several runs' quality.json (and their grids, stacked)."""
    rows, notes, grids = [], [], []
    for d in dirs:
        data = json.loads((d / "quality.json").read_text())
        rows += data["rows"]
        notes += [f"{d}: {n}" for n in data["notes"]]
        if (d / "grid.png").exists():
            with Image.open(d / "grid.png") as im:
                grids.append(np.asarray(im.convert("RGB")))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    write_outputs(out, rows, [], REFERENCE, _baselines(methods), notes)
    if grids:
        Image.fromarray(np.concatenate(grids)).save(out / "grid.png")


def _base(name: str) -> str:
    return name if name in METHODS else REFERENCE


def _baselines(methods: list[str]) -> list[str]:
    return [m for m in methods if not m.startswith("Z-Erase")]


def run(pipe, evaluator, settings, name: str, concept: str, seed: int, steps: int | None, recipe: dict, extra: dict,
        tmp: Path, n_seeds: int, full: bool, grid_rows: list[np.ndarray] | None, show: str, fast: bool) -> dict:
    """One method on one concept at one training seed: train (or edit), then the evaluation protocol. `fast`:
    toy banks and pools, every option still exercised."""
    method = METHODS[_base(name)]
    t = time.monotonic()
    info: dict = {"final_lambda": None, "energy_kept": None}
    if method.kind == "zeroing":
        def install():  # noqa: ANN202
            z = TokenZeroing(pipe, concept)
            z.prepare([p for g in world_concepts() for p in g.prompts]
                      + [p for ps in world_attack_prompts(concept).values() for p in ps])
            return z.remove
    else:
        config = method_config(_base(name), concept, settings, recipe=recipe, steps=steps, seed=seed,
                               extra=extra if method.kind == "train" else None)
        if fast:
            config = dataclasses.replace(config, trajectories=2, refresh_every=min(config.refresh_every, 1),
                                         prompt_pool=min(config.prompt_pool, 6), pool_variants=2)
        if method.kind == "uce":
            result = uce_erase(pipe, config)
            info["energy_kept"] = result.timings["uce_energy_kept"]
        else:
            result = erase(pipe, config)
            info["final_lambda"] = result.final_lambda
        path = tmp / f"{concept}-{seed}-{abs(hash(name))}.safetensors"
        result.save(path)
        if method.strength:  # as a job does before it is judged
            found = strengthen_as_a_job_does(pipe, path, evaluator, settings, concept)
            info |= {"strength": found.strength, "strength_tried": found.tried, "strength_search": STRENGTH_SEARCH}
        install = (install_routed(pipe, path, concept, fallback=method.served == "as served")
                   if method.served in ("routed", "as served") else install_artifact(pipe, path))
        if method.served == "as served":
            info["fallback_keep_weight"] = FALLBACK_KEEP_WEIGHT
    train_s = time.monotonic() - t
    if grid_rows is not None:
        remove = install()
        try:
            grid_rows.append(generate(pipe, [show] * len(GRID_SEEDS), GRID_SEEDS, settings))
        finally:
            remove()
    report = evaluate_intervention(pipe, concept, install, evaluator, n_seeds, settings, full=full,
                                   baseline_cache=BASELINES)
    kinds = report["attacks"]
    return {
        "concept": concept, "method": name, "train_seed": seed,
        **{k: report.get(k) for k in ("acc_e_before", "acc_e", "acc_ir_before", "acc_ir", "ha", "drift",
                                      "coherence_before", "coherence")},
        "acc_ir_drop": report["acc_ir_before"] - report["acc_ir"],
        "attack_success": float(np.mean([v["after"] for v in kinds.values()])) if kinds else 0.0,
        "attacks": {k: v["after"] for k, v in kinds.items()},
        "kept": {k: v["after"] for k, v in report["per_concept"].items()},
        **info, "train_s": round(train_s, 1), "total_s": round(time.monotonic() - t, 1),
        "coherence_metric": COHERENCE_METRIC, "evaluation_prompts": EVALUATION_PROMPTS,
    }


if __name__ == "__main__":
    main()
