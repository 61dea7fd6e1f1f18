"""The routed fallback, made several ways from the same erasures: what it costs the kept concepts and what it leaves
of a concept's string attacks, as the set serves them.

    OMP_NUM_THREADS=1 python benchmarks/fallback_probe.py [--concepts red circle outlined Mira] [--attacked outlined]
        [--strengths served trained] [--keep-weights 1 4] [--seeds 8]

The erasures are `benchmarks/takedowns.py`'s, cached under var/takedowns/ (run it on the set first: each is trained
and strength-searched as a job does). Per variant (the erasures at their served or trained strength; the
consolidation's kept term at each weight) it makes the set's fallback with zerase.serve.served_patch, routes the
set, judges it (zerase.evaluate.served_evaluation: each concept's Acc_e, the kept concepts 8 images each) and draws
every string attack on `--attacked` at `--seeds` seeds. One JSON line per variant.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from zerase.evaluate.served_evaluation import Served, evaluate_served
from zerase.model.generate import generate
from zerase.model.pipeline import load_pipeline
from zerase.model.profiles import profile_for
from zerase.patch.apply import PatchedPipeline
from zerase.patch.artifact import load_artifact
from zerase.serve.routing import routed_for
from zerase.serve.served_patch import served_patch
from zerase.world.evaluator import world_attack_prompts
from zerase.world.profile import world_category


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concepts", nargs="+", default=["red", "circle", "outlined", "Mira"])
    parser.add_argument("--attacked", default="outlined")
    parser.add_argument("--strengths", nargs="+", default=["served", "trained"], choices=["served", "trained"])
    parser.add_argument("--keep-weights", nargs="+", type=float, default=[1.0, 4.0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--cache", type=Path, default=Path("var/takedowns"))
    parser.add_argument("--train-seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse()
    pipe = load_pipeline(None, "cpu", torch.float32)
    profile = profile_for(None)
    evaluator, sampling = profile.evaluator(), profile.sampling
    assert evaluator is not None
    artifacts = []
    for c in args.concepts:
        found = [p for p in args.cache.glob(f"*/{c}-*-s{args.train_seed}.safetensors")]
        if not found:
            raise SystemExit(f"no cached erasure of {c}: run benchmarks/takedowns.py --sets {','.join(args.concepts)}")
        artifacts.append(load_artifact(found[0], pipe))
    categories = [world_category(c) for c in args.concepts]
    attacks = world_attack_prompts(args.attacked)
    print(json.dumps({"served_strengths": dict(zip(args.concepts, [a.metadata.get("strength", 1.0)
                                                                   for a in artifacts], strict=True))}), flush=True)
    for strength in args.strengths:
        sources = [a.at_strength(1.0) for a in artifacts] if strength == "trained" else artifacts
        for weight in args.keep_weights:
            started = time.monotonic()
            fallback = served_patch(pipe, sources, profile, "routed", keep_weight=weight)
            routed, _ = routed_for(pipe, profile, artifacts, fallback, categories=categories)
            served = [Served(c, a, 1.0, k) for c, a, k in zip(args.concepts, artifacts, categories, strict=True)]
            result = evaluate_served(pipe, served, evaluator, sampling, routed=routed)
            patched = PatchedPipeline(pipe)
            patched.apply_routed(routed)
            try:
                rates = {}
                for kind, prompts in attacks.items():
                    shots = [(p, s) for p in prompts for s in range(args.seeds)]
                    images = generate(pipe, [p for p, _ in shots], [s for _, s in shots], sampling)
                    readings = evaluator.read(images, [p for p, _ in shots])
                    rates[kind] = round(float(np.mean([args.attacked in r for r in readings])), 3)
            finally:
                patched.clear()
            kept = result["kept"]
            print(json.dumps({
                "fallback": strength, "keep_weight": weight, "acc_ir": [kept["acc_ir_before"], kept["acc_ir"]],
                "worst": kept.get("worst"), "acc_e": {c["concept"]: c["acc_e"] for c in result["concepts"]},
                f"{args.attacked}_attacks": rates, "attack_mean": round(float(np.mean(list(rates.values()))), 3),
                "per_concept": kept.get("per_concept"), "s": round(time.monotonic() - started)}), flush=True)


if __name__ == "__main__":
    main()
