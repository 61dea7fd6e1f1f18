"""Takedowns that hold together: N erasures of the bundled world served at once, by each way of serving them,
judged as served (zerase.evaluate.served_evaluation: each concept's Acc_e and string attacks under the combined patch,
every other concept 8 images each against the base model) and timed through the pipeline.

    OMP_NUM_THREADS=1 python benchmarks/takedowns.py [--sets red,circle,Mira red,circle,outlined,Mira ...]
        [--methods average sum ties calibrated closed_form] [--train-seeds 1] [--out benchmarks/takedowns]
    python benchmarks/takedowns.py --table --out benchmarks/takedowns   # the table from the cells there

Methods: `average`, the paper's 1/N (Appendix F, what the service served so far); `sum`, weight 1 each; `ties`,
TIES-merging of the dense ΔW_i (trim to the top 20 % magnitudes, elect the sign by mass, average the agreeing
entries), served at rank 32; `calibrated`, per-erasure weights w_i = 1/√N (between the average and the sum);
`closed_form`, zerase.serve.fusion (one caption-row ΔW fitted to each erasure's output on its own concept's inputs and
to the frozen output on the kept concepts', rank 32); `consolidated`, zerase.serve.consolidation (that patch trained
further, end to end, toward each erasure's own outputs on its prompts and the frozen model's on the kept ones);
`routed`, zerase.serve.routing (per prompt, the erasures the text encoder reads it naming, each at weight 1, else the
consolidated patch, its kept term weighted 4: zerase.serve.served_patch); `routed_served_fallback`, the same with the
fallback's kept term at weight 1 (as the service made it until 2026-12-07); `routed_trained_fallback`, that fallback
made from each erasure at its trained strength instead of its served one; `routed_only`, the same without the
consolidated fallback (a prompt naming none of the erasures gets the base model). Each erasure is
trained once per training seed with the service's defaults, served at the strength a job would serve it at
(zerase.evaluate.strength), and cached under var/takedowns/ (keyed by those defaults and the search's limits). Each cell
(set × method × training seed) is written to --out/cells/ as soon as it is done and skipped
when it exists (measured on this build of the world at today's category defaults: cells record the model's weights
hash and the training settings), so a long run resumes; the table (takedowns.md) is rebuilt from whatever cells exist,
missing ones named.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zerase.evaluate.served_evaluation import Served, evaluate_served
from zerase.evaluate.strength import SEARCH, STRENGTHS, StrengthLimits, search_strength
from zerase.model.generate import generate
from zerase.model.pipeline import load_pipeline
from zerase.model.profiles import profile_for
from zerase.patch.apply import PatchedPipeline, Routed
from zerase.patch.artifact import FORMAT, FORMAT_VERSION, LoraArtifact, base_fingerprint, load_artifact, write_artifact
from zerase.serve.fusion import FUSED_RANK
from zerase.serve.routing import routed_for
from zerase.serve.served_patch import served_patch
from zerase.train.erasure import erase
from zerase.train.presets import CATEGORY_SETTINGS, resolve
from zerase.world.profile import world_category

# The celebrity protocol (the paper's Table 2): half of the world's 24 characters erased together, the other half
# kept. Two of each (shape, style) group are erased; the sets of N = 1, 2, 4, 8, 12 are this list's prefixes.
ERASED_CHARACTERS = ("Mira", "Toko", "Zed", "Dala", "Aro", "Hana", "Pim", "Kai", "Eno", "Lumo", "Sela", "Tavi")
CHARACTER_SETS = tuple(",".join(ERASED_CHARACTERS[:n]) for n in (1, 2, 4, 8, 12))
# Then the mixed set of four (a colour, a shape, a style, a character) and all five colours.
DEFAULT_SETS = (*CHARACTER_SETS, "red,circle,outlined,Mira", "red,yellow,green,blue,purple")
# The routed fallback's arms: how the service made it before (kept weight 1), and at the trained strength.
FALLBACK_ARMS = ("routed_served_fallback", "routed_trained_fallback")
METHODS = ("average", "sum", "ties", "calibrated", "closed_form", "consolidated", "routed", *FALLBACK_ARMS,
           "routed_only")
DEFAULT_METHODS = tuple(m for m in METHODS if m not in FALLBACK_ARMS)  # the arms are run on demand, to compare
TIMED_PROMPTS = ["a red circle", "Mira", "a blue star", "a picture of Toko"]
# How a made patch is made, for the methods that make one: cells made otherwise are not mixed in. Since 2026-12-06
# the fused patch keeps each preserved concept in its prompts (zerase.serve.fusion.fusion_prompts), and the router
# reads each erasure as its request's category (zerase.serve.routing.router_for).
MADE = {"keep": "expanded", "router": "request category"}
MADE_BY = ("closed_form", "consolidated", "routed", *FALLBACK_ARMS, "routed_only")
# Since 2026-12-07 the routed fallback's kept term is weighted 4 (zerase.serve.served_patch). A routed cell without
# this mark was made at weight 1 (routed_served_fallback's fallback): the table still shows it, marked †.
FALLBACK = {"routed": "served strength, kept weight 4", "routed_served_fallback": "served strength",
            "routed_trained_fallback": "trained strength"}


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=list(DEFAULT_SETS), help="comma-separated concepts each")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS)
    parser.add_argument("--train-seeds", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=Path("var/takedowns"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/takedowns"))
    parser.add_argument("--table", action="store_true", help="only rebuild the table from the cells")
    return parser.parse_args()


def model_id(pipe: Any) -> str:
    """The served model's weights, short: cells and cached erasures of another build of the world are not mixed in."""
    return base_fingerprint(pipe.transformer)["weights_sha256"][:12]


def defaults(concepts: list[str]) -> dict[str, dict[str, Any]]:
    """The category training defaults each concept's erasure is trained with: cells and cached erasures trained at
    other defaults (an earlier round's) are not mixed in."""
    out = {}
    for c in concepts:
        category = world_category(c)
        config = resolve(c, category)  # characters, shapes and styles have the world's anchor since 2026-12-06
        out[c] = CATEGORY_SETTINGS[category] | ({"anchor": config.anchor, "target": config.target}
                                                if config.anchor else {}) | {"served_strengths": list(STRENGTHS)}
    return out


def _defaults_id(concept: str) -> str:
    """The cached erasure's key: its training defaults and the rule that chose its served strength."""
    key = defaults([concept]) | {"strength_limits": asdict(StrengthLimits()), "strength_search": SEARCH}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]


def trained(pipe: Any, concept: str, seed: int, cache: Path) -> LoraArtifact:
    path = cache / model_id(pipe) / f"{concept}-{_defaults_id(concept)}-s{seed}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # What the service trains for the request: the category's defaults (null-space projection, on-policy
        # banks for characters, the unnamed prior).
        # and, as a job does before it is judged, the strength it is served at (zerase.evaluate.strength).
        category = world_category(concept)
        raw = path.with_name(f"{path.stem}-trained.safetensors")
        if not raw.exists():
            erase(pipe, resolve(concept, category, seed=seed)).save(raw)
        artifact = load_artifact(raw, pipe)
        profile = profile_for()
        found = search_strength(pipe, artifact, profile.evaluator(), profile.sampling, category=category)
        print(f"  {concept} s{seed}: served at {found.strength:g}x ({found.tried})", flush=True)
        write_artifact(artifact.at_strength(found.strength), path)
    return load_artifact(path, pipe)


def _artifact(tensors: dict[str, torch.Tensor], like: LoraArtifact, concept: str, method: str) -> LoraArtifact:
    rank = next(t.shape[0] for k, t in tensors.items() if k.endswith("lora_A.weight"))
    meta = {**{k: like.metadata[k] for k in ("base_model", "target_modules", "layers", "gating")},
            "format": FORMAT, "format_version": FORMAT_VERSION, "rank": rank, "alpha": float(rank),
            "concept": concept, "fusion": {"method": method}}
    return LoraArtifact(tensors, meta, method)


def low_rank(deltas: dict[str, torch.Tensor], like: LoraArtifact, concept: str, method: str) -> LoraArtifact:
    tensors = {}
    for path, delta in deltas.items():
        u, s, vh = torch.linalg.svd(delta.float(), full_matrices=False)
        r = min(FUSED_RANK, s.shape[0])
        tensors[f"{path}.lora_B.weight"], tensors[f"{path}.lora_A.weight"] = (u[:, :r] * s[:r]).contiguous(), \
            vh[:r].contiguous()
    return _artifact(tensors, like, concept, method)


def ties(artifacts: list[LoraArtifact], density: float = 0.2) -> dict[str, torch.Tensor]:
    """TIES-merging (Yadav et al. 2023) of the dense ΔW_i: trim, elect sign, disjoint merge."""
    out = {}
    deltas = [a.delta_weights() for a in artifacts]
    for path in deltas[0]:
        stack = torch.stack([d[path] for d in deltas])  # (N, out, in)
        k = max(1, int(density * stack[0].numel()))
        cut = stack.abs().flatten(1).kthvalue(stack[0].numel() - k + 1, dim=1).values.view(-1, 1, 1)
        trimmed = torch.where(stack.abs() >= cut, stack, torch.zeros_like(stack))
        sign = torch.sign(trimmed.sum(0))
        agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
        merged = (trimmed * agree).sum(0) / agree.sum(0).clamp(min=1)
        out[path] = merged  # the disjoint mean keeps each erasure's own size where it alone acts
    return out


def patch_for(method: str, pipe: Any, artifacts: list[LoraArtifact], concepts: list[str]
              ) -> tuple[list[LoraArtifact], list[float], float]:
    """(artifacts, weights) to serve, and the seconds it took to make them."""
    started, n = time.monotonic(), len(artifacts)
    name = " + ".join(concepts)
    if method == "average":
        return artifacts, [1.0 / n] * n, 0.0
    if method == "sum":
        return artifacts, [1.0] * n, 0.0
    if method == "calibrated":
        return artifacts, [1.0 / math.sqrt(n)] * n, 0.0
    if method == "ties":
        return [low_rank(ties(artifacts), artifacts[0], name, "ties")], [1.0], time.monotonic() - started
    if method == "routed_only":
        return [], [], 0.0
    # As the service makes it; the arms' fallback is the set's consolidated patch (kept weight 1), of the served or the
    # trained erasures.
    sources = [a.at_strength(1.0) for a in artifacts] if method == "routed_trained_fallback" else artifacts
    made = served_patch(pipe, sources, profile_for(None), "consolidated" if method in FALLBACK_ARMS else method)
    return [made], [1.0], time.monotonic() - started


def serving_p50(pipe: Any, patch: list[LoraArtifact], weights: list[float], sampling: Any, runs: int = 9,
                routed: Routed | None = None) -> float:
    patched = PatchedPipeline(pipe)
    if routed is not None:
        patched.apply_routed(routed)
    elif patch:
        patched.apply(patch, weights)
    try:
        times = []
        for i in range(runs):
            t = time.perf_counter()
            generate(pipe, TIMED_PROMPTS, [i] * len(TIMED_PROMPTS), sampling)
            times.append(time.perf_counter() - t)
        return float(np.median(times))
    finally:
        patched.clear()


def run_cell(pipe: Any, concepts: list[str], method: str, seed: int, cache: Path) -> dict[str, Any]:
    profile = profile_for(None)
    evaluator, sampling = profile.evaluator(), profile.sampling
    assert evaluator is not None
    artifacts = [trained(pipe, c, seed, cache) for c in concepts]
    patch, weights, build_s = patch_for(method, pipe, artifacts, concepts)
    routed, routing = None, None
    if method in ("routed", *FALLBACK_ARMS, "routed_only"):  # the router calibrated as the service calibrates it
        started = time.monotonic()
        routed, routing = routed_for(pipe, profile, artifacts, patch[0] if patch else None,
                                     categories=[world_category(c) for c in concepts])
        build_s += time.monotonic() - started
    stacked = patch is artifacts  # served as the stack at `weights`; otherwise one made patch at weight 1
    served = [Served(c, a, w if stacked else 1.0, world_category(c))
              for c, a, w in zip(concepts, artifacts, weights if stacked else [1.0] * len(artifacts), strict=True)]
    started = time.monotonic()
    result = evaluate_served(pipe, served, evaluator, sampling, patch=None if stacked else patch, routed=routed)
    p50_base = serving_p50(pipe, [], [], sampling)
    p50 = serving_p50(pipe, patch, weights, sampling, routed=routed)
    return {"set": concepts, "method": method, "train_seed": seed, "model": model_id(pipe),
            "defaults": defaults(concepts), **({"made": made(method)} if method in MADE_BY else {}),
            "build_s": round(build_s, 2),
            "evaluate_s": round(time.monotonic() - started, 2), "served_rank": sum(
                int(a.metadata["rank"]) for a in patch), "p50_ratio": p50 / p50_base, **result,
            **({"routing": routing} if routing is not None else {})}


def cell_path(out: Path, concepts: list[str], method: str, seed: int) -> Path:
    return out / "cells" / f"{'+'.join(concepts)}__{method}__s{seed}.json"


def _row(concepts: list[str], method: str, cells: list[dict[str, Any]]) -> str:
    """One table row: the mean over training seeds of each figure."""
    def mean(values: list[float]) -> float:
        return float(np.mean(values))

    def concept_mean(concept: str, key: str) -> float:
        return mean([next(y[key] for y in c["concepts"] if y["concept"] == concept) for c in cells])

    acc = {y["concept"]: (concept_mean(y["concept"], "acc_e_before"), concept_mean(y["concept"], "acc_e"))
           for y in cells[0]["concepts"]}
    max_e = max(a for _, a in acc.values())
    attack = mean([max(y["attack_success_rate"]["after"] for y in c["concepts"]) for c in cells])
    ir_b, ir = mean([c["kept"]["acc_ir_before"] for c in cells]), mean([c["kept"]["acc_ir"] for c in cells])
    worst = cells[0]["kept"]["worst"] or {}
    # H: the harmonic mean of erasure (1 - Acc_e, the worst concept) and kept accuracy (MACE's H).
    h = 0.0 if ir + (1 - max_e) == 0 else 2 * ir * (1 - max_e) / (ir + (1 - max_e))
    seeds = f" ({len(cells)} training seeds)" if len(cells) > 1 else ""
    return (f"| {', '.join(concepts)} ({len(concepts)}) | {method}{seeds} | "
            + ", ".join(f"{k} {b:.2f}→{a:.2f}" for k, (b, a) in acc.items())
            + f" | {max_e:.2f} | {attack:.2f} | {ir_b:.2f} → {ir:.2f} | {ir_b - ir:.3f} | "
            f"{worst.get('concept')} {worst.get('before', 0):.2f}→{worst.get('after', 0):.2f} | {h:.3f} | "
            f"{mean([c['p50_ratio'] for c in cells]):.2f}× | {cells[0]['served_rank']} |")


def made(method: str) -> dict[str, str]:
    return MADE | ({"fallback": FALLBACK[method]} if method in FALLBACK else {})


def load_cell(out: Path, concepts: list[str], method: str, seed: int, model: str,
              earlier_fallback: bool = False) -> dict[str, Any] | None:
    """The cell, if it was measured on this build of the world with today's category defaults, made as `made` says;
    `earlier_fallback`: also a routed cell whose fallback was made before FALLBACK (its kept term at weight 1)."""
    path = cell_path(out, concepts, method, seed)
    cell = json.loads(path.read_text()) if path.exists() else None
    if cell is None or cell.get("model") != model or cell.get("defaults") != defaults(concepts):
        return None
    if method not in MADE_BY or cell.get("made") == made(method):
        return cell
    return cell if earlier_fallback and method == "routed" and cell.get("made") == MADE else None


def table(out: Path, sets: list[list[str]], methods: list[str], seeds: int, model: str) -> str:
    lines = ["| set (N) | method | Acc_e per concept (before → after) | max Acc_e | worst attack | kept Acc_ir "
             "(before → after) | drop | worst kept (before → after) | H | p50 vs unpatched | served rank |",
             "|---" * 11 + "|"]
    missing = []
    for concepts in sets:
        for method in methods:
            cells = [c for s in range(seeds)
                     if (c := load_cell(out, concepts, method, s, model, earlier_fallback=True)) is not None]
            earlier = any(c.get("made") != made(method) for c in cells if method in MADE_BY)
            if cells:
                lines.append(_row(concepts, method + (" †" if earlier else ""), cells))
            elif method in DEFAULT_METHODS:
                missing.append(f"{'+'.join(concepts)} × {method}")
    if any(" † |" in line for line in lines):
        lines.append("\n† Its fallback's kept term at weight 1, as before 2026-12-07 (routed_served_fallback's).")
    if missing:
        lines.append(f"\nNot run yet: {'; '.join(missing)}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse()
    sets = [s.split(",") for s in args.sets]
    pipe = load_pipeline(None, "cpu", torch.float32)
    model = model_id(pipe)
    if not args.table:
        args.cache.mkdir(parents=True, exist_ok=True)
        for seed in range(args.train_seeds):
            for concepts in sets:
                for method in args.methods:
                    path = cell_path(args.out, concepts, method, seed)
                    if load_cell(args.out, concepts, method, seed, model) is not None:
                        continue
                    cell = run_cell(pipe, concepts, method, seed, args.cache)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps(cell, indent=1))
                    print(f"{'+'.join(concepts)} {method} s{seed}: max Acc_e "
                          f"{max(c['acc_e'] for c in cell['concepts']):.2f}, Acc_ir {cell['kept']['acc_ir_before']:.2f}"
                          f" → {cell['kept']['acc_ir']:.2f}", flush=True)
    text = table(args.out, sets, list(METHODS), args.train_seeds, model)  # every method with cells
    (args.out / "takedowns.md").parent.mkdir(parents=True, exist_ok=True)
    (args.out / "takedowns.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
