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
the searched strength) and cached under var/fallback-readings/; its fallback is made each run, as the job makes it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from _quality_methods import RECIPES, install_routed, method_config, strengthen_as_a_job_does, world_stack

from zerase.model.generate import generate
from zerase.patch.artifact import load_artifact
from zerase.train.erasure import erase
from zerase.world.evaluator import world_attack_prompts
from zerase.world.profile import world_axis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", nargs="+", default=["star", "outlined"])
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--cache", type=Path, default=Path("var/fallback-readings"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/takedowns/fallback-readings.json"))
    args = parser.parse_args()
    pipe, _, sampling, evaluator = world_stack()
    seeds = list(range(args.seeds))
    args.cache.mkdir(parents=True, exist_ok=True)
    results: dict[str, object] = {}
    for concept in args.concepts:
        axis = world_axis(concept)
        if axis is None:
            raise SystemExit(f"{concept!r} is not a concept of the bundled world")
        path = args.cache / f"{concept}-s{args.train_seed}.safetensors"
        if not path.exists():
            config = method_config("Z-Erase, as served", concept, sampling, recipe=RECIPES["paper"], steps=None,
                                   seed=args.train_seed)
            erase(pipe, config).save(path)
            strengthen_as_a_job_does(pipe, path, evaluator, sampling, concept)
        # Each arm an intervention as the quality protocol installs it (install -> remover); the fallback is made
        # as the job makes it.
        arms = {"base": None, "routed only": install_routed(pipe, path, concept),
                "as served": install_routed(pipe, path, concept, fallback=True)}
        rows: dict[str, dict[str, object]] = {}
        for arm, install in arms.items():
            remove = install() if install is not None else None
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
                if remove is not None:
                    remove()
        strength = load_artifact(path).metadata.get("strength", 1.0)
        results[concept] = {"strength": strength, "attacks": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"train_seed": args.train_seed, "seeds": args.seeds, "concepts": results},
                                   indent=1))


if __name__ == "__main__":
    main()
