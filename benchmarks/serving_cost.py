"""What serving N erasures costs `/generate`'s sampler, side by side in one run: p50 of one pipeline call on
`takedowns.TIMED_PROMPTS` (a colour-shape prompt, two characters' prompts, another colour-shape prompt, so one batch
mixes routes), with no patch, the paper's 1/N stack, one fused patch of rank 32 and routed serving (each prompt the
erasures it names, the others that fused patch; zerase.serve.routing), the settings interleaved repetition by
repetition so drift hits them alike. The erasures are `benchmarks/takedowns.py`'s cached ones (training seed 0);
the fused patch is the closed form (the consolidated patch has the same rank and costs the same to serve).

    OMP_NUM_THREADS=2 python benchmarks/serving_cost.py [--n 20] [--repeats 15] [--out benchmarks/takedowns]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from takedowns import ERASED_CHARACTERS, TIMED_PROMPTS, model_id, trained

from zerase.model.generate import generate
from zerase.model.pipeline import load_pipeline
from zerase.model.profiles import profile_for
from zerase.patch.apply import PatchedPipeline
from zerase.serve.fusion import fuse_closed_form, fusion_prompts
from zerase.serve.guard import PromptGuard
from zerase.serve.routing import routed, router_for
from zerase.world.profile import world_category

# 20 erasures: the celebrity protocol's twelve, the five colours, three shapes and styles.
CONCEPTS = (*ERASED_CHARACTERS, "red", "yellow", "green", "blue", "purple", "circle", "star", "outlined")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--cache", type=Path, default=Path("var/takedowns"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/takedowns"))
    args = parser.parse_args()
    pipe = load_pipeline(None, "cpu", torch.float32)
    profile = profile_for(None)
    sampling = profile.sampling
    concepts = list(CONCEPTS[:args.n])
    artifacts = []
    for concept in concepts:  # trained once into --cache, then read from it
        artifacts.append(trained(pipe, concept, 0, args.cache))
        print(f"{len(artifacts)}/{len(concepts)} erasures ready", flush=True)
    # What a new version costs before its first image (the deploy side, once per version and process).
    started = time.perf_counter()
    own, keep = fusion_prompts(profile, artifacts)
    fused = fuse_closed_form(pipe, artifacts, own, keep, sampling)
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    router, _ = router_for(PromptGuard.for_pipeline(pipe), profile, artifacts,
                           categories=[world_category(c) for c in concepts])
    served = routed(router, artifacts, fused)
    calibrate_s = time.perf_counter() - started
    print(f"fused in {fit_s:.0f} s, router calibrated in {calibrate_s:.0f} s; timing", flush=True)
    patched = PatchedPipeline(pipe)
    # Routed serving is timed warm (the prompts' routes known, as for a prompt the service has seen) and cold: a new
    # `Routed` each repetition forgets every prompt's route and column cut, so each timed call reads its prompts with
    # the text encoder and cuts their columns, as a service's new prompts do.
    setups = {"unpatched": lambda: None, "average": lambda: patched.apply(artifacts),
              "fused": lambda: patched.apply([fused]), "routed": lambda: patched.apply_routed(served),
              "routed_cold": lambda: patched.apply_routed(routed(router, artifacts, fused))}
    times: dict[str, list[float]] = {name: [] for name in setups}
    for rep in range(args.repeats + 1):  # the first repetition warms every setting up and is not counted
        for name, install in setups.items():
            patched.clear()
            install()
            started = time.perf_counter()
            generate(pipe, TIMED_PROMPTS, [rep] * len(TIMED_PROMPTS), sampling)
            if rep:
                times[name].append(time.perf_counter() - started)
    patched.clear()
    base = float(np.median(times["unpatched"]))
    row = {"n": args.n, "concepts": concepts, "model": model_id(pipe), "repeats": args.repeats,
           "threads": torch.get_num_threads(),
           "fit_s": fit_s, "calibrate_s": calibrate_s,
           "routes": [list(r) for r in served.route(TIMED_PROMPTS)], "p50_s": {k: float(np.median(v))
                                                                             for k, v in times.items()},
           "p50_ratio": {k: float(np.median(v)) / base for k, v in times.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if torch.get_num_threads() == 1 else f"-{torch.get_num_threads()}threads"
    (args.out / f"serving-cost-{args.n}{suffix}.json").write_text(json.dumps(row, indent=1))
    print(json.dumps(row["p50_ratio"]), row["routes"])


if __name__ == "__main__":
    main()
