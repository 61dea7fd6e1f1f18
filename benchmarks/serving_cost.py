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
from zerase.serve.routing import routed_for

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
    artifacts = [trained(pipe, c, 0, args.cache) for c in concepts]
    own, keep = fusion_prompts(profile, artifacts)
    fused = fuse_closed_form(pipe, artifacts, own, keep, sampling)
    routed, _ = routed_for(pipe, profile, artifacts, fused)
    patched = PatchedPipeline(pipe)
    setups = {"unpatched": lambda: None, "average": lambda: patched.apply(artifacts),
              "fused": lambda: patched.apply([fused]), "routed": lambda: patched.apply_routed(routed)}
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
           "routes": [list(r) for r in routed.route(TIMED_PROMPTS)], "p50_s": {k: float(np.median(v))
                                                                             for k, v in times.items()},
           "p50_ratio": {k: float(np.median(v)) / base for k, v in times.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"serving-cost-{args.n}.json").write_text(json.dumps(row, indent=1))
    print(json.dumps(row["p50_ratio"]), row["routes"])


if __name__ == "__main__":
    main()
