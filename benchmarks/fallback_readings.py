"""What an erasure's fallback does to its attack prompts, told apart from what the probe reads into broken images.

Served alone, an erasure goes routed: the prompts the router reads as naming the concept get the erasure, every other
prompt its consolidated fallback (zerase.serve.routing). The quality protocol's attack success counts the images the
world's probe reads as the concept, clean or not; on a prompt the world never learnt ("a pentagram") the images are
mostly no clean object, and what the probe reads there is noise. So, per attack kind and serving arm, this prints
the share the probe reads as the concept, the share that are a clean object (the evaluator's coherence), and the
share that are both: the concept plainly shown.

    OMP_NUM_THREADS=2 python benchmarks/fallback_readings.py [--concepts star outlined] [--train-seed 0] \\
        [--seeds 8] [--out benchmarks/takedowns/fallback-readings.json]

Arms: `base` (no patch), `routed only` (the routed erasure, other prompts unpatched) and `as served` (with the
fallback, as /generate serves it). Each erasure is trained as "Z-Erase, as served" trains it (the category defaults,
the searched strength), and it and its fallback are cached under var/fallback-readings/.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from _quality_methods import RECIPES, method_config, world_stack

from zerase.evaluate.strength import search_strength, strengthened
from zerase.model.generate import generate
from zerase.patch.apply import PatchedPipeline
from zerase.patch.artifact import load_artifact, write_artifact
from zerase.serve.routing import routed_for
from zerase.serve.served_patch import served_patch
from zerase.train.erasure import erase
from zerase.world.evaluator import world_attack_prompts
from zerase.world.profile import AXIS_CATEGORY, world_axis

ARMS = ("base", "routed only", "as served")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", nargs="+", default=["star", "outlined"])
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--cache", type=Path, default=Path("var/fallback-readings"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/takedowns/fallback-readings.json"))
    args = parser.parse_args()
    pipe, profile, sampling, evaluator = world_stack()
    seeds = list(range(args.seeds))
    args.cache.mkdir(parents=True, exist_ok=True)
    results: dict[str, object] = {}
    for concept in args.concepts:
        axis = world_axis(concept)
        if axis is None:
            raise SystemExit(f"{concept!r} is not a concept of the bundled world")
        category = AXIS_CATEGORY[axis]
        path = args.cache / f"{concept}-s{args.train_seed}.safetensors"
        if not path.exists():
            config = method_config("Z-Erase, as served", concept, sampling, recipe=RECIPES["paper"], steps=None,
                                   seed=args.train_seed)
            erase(pipe, config).save(path)
            trained = load_artifact(path, pipe)
            write_artifact(strengthened(trained, search_strength(pipe, trained, evaluator, sampling,
                                                                 category=category).strength), path)
        artifact = load_artifact(path, pipe)
        fallback_path = args.cache / f"{concept}-s{args.train_seed}-fallback.safetensors"
        if not fallback_path.exists():
            write_artifact(served_patch(pipe, [artifact], profile, "routed"), fallback_path)
        fallback = load_artifact(fallback_path)
        served = {"routed only": routed_for(pipe, profile, [artifact], None, categories=[category])[0],
                  "as served": routed_for(pipe, profile, [artifact], fallback, categories=[category])[0]}
        rows: dict[str, dict[str, object]] = {}
        for arm in ARMS:
            patched = PatchedPipeline(pipe)
            if arm in served:
                patched.serve(served[arm])
            try:
                for kind, prompts in world_attack_prompts(concept).items():
                    batch = [p for p in prompts for _ in seeds]
                    images = generate(pipe, batch, [s for _ in prompts for s in seeds], sampling)
                    read = np.array([concept in r for r in evaluator.read(images, batch)])
                    clean = np.array(evaluator.coherent(images, batch))
                    row = {"read": float(read.mean()), "clean": float(clean.mean()),
                           "shown": float((read & clean).mean())}
                    rows.setdefault(kind, {"prompts": prompts})[arm] = row
                    print(f"{concept:9} {kind:12} {arm:12} read {row['read']:.2f}  clean {row['clean']:.2f}  "
                          f"shown {row['shown']:.2f}", flush=True)
            finally:
                patched.clear()
        results[concept] = {"strength": artifact.metadata.get("strength", 1.0), "attacks": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"train_seed": args.train_seed, "seeds": args.seeds, "concepts": results},
                                   indent=1))


if __name__ == "__main__":
    main()
