"""One default erasure of each concept served at several multiples of its trained LoRA scale, every prompt of the full
protocol patched (raw, not routed: the kept concepts' drop is the most it could cost), 8 evaluation seeds.
What zerase.evaluate.strength's search chooses from.

    OMP_NUM_THREADS=2 python benchmarks/served_strength.py [--concepts circle outlined star filled]
        [--strengths 1 1.5 2 3] [--out benchmarks/served-strength]

Writes <concept>.json per concept (its trained erasure is kept under var/served-strength/ and reused).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from zerase.evaluate.evaluation import evaluate_intervention
from zerase.model.pipeline import load_pipeline
from zerase.model.profiles import profile_for
from zerase.patch.apply import PatchedPipeline
from zerase.patch.artifact import load_artifact
from zerase.train.erasure import erase
from zerase.train.presets import resolve
from zerase.world.profile import world_category

FIGURES = ("acc_e_before", "acc_e", "acc_ir_before", "acc_ir", "coherence_before", "coherence", "ha")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concepts", nargs="+", default=["circle", "outlined", "star", "filled"])
    parser.add_argument("--strengths", nargs="+", type=float, default=[1.0, 1.5, 2.0, 3.0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--cache", type=Path, default=Path("var/served-strength"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/served-strength"))
    args = parser.parse_args()
    pipe, profile = load_pipeline(), profile_for()
    evaluator, sampling = profile.evaluator(), profile.sampling
    assert evaluator is not None, "the bundled model has no concept probe"
    args.out.mkdir(parents=True, exist_ok=True)
    args.cache.mkdir(parents=True, exist_ok=True)
    baselines: dict = {}
    for concept in args.concepts:
        path = args.cache / f"{concept}.safetensors"
        if not path.exists():
            started = time.monotonic()
            erase(pipe, resolve(concept, world_category(concept))).save(path)
            print(f"{concept}: trained in {time.monotonic() - started:.0f}s", flush=True)
        trained = load_artifact(path, pipe)
        rows = []
        for strength in args.strengths:
            patched, served = PatchedPipeline(pipe), trained.at_strength(strength)

            def install(patched: PatchedPipeline = patched, served=served):  # noqa: ANN001, ANN202
                patched.apply([served])
                return patched.clear

            m = evaluate_intervention(pipe, concept, install, evaluator, args.seeds, sampling,
                                      baseline_cache=baselines)
            rows.append({"strength": strength, **{k: m[k] for k in FIGURES},
                         "acc_ir_drop": m["acc_ir_before"] - m["acc_ir"]})
            print(f"{concept} {strength:g}x: Acc_e {m['acc_e_before']:.2f}→{m['acc_e']:.2f}, drop "
                  f"{rows[-1]['acc_ir_drop']:.3f}, coherence {m['coherence']:.2f}", flush=True)
        (args.out / f"{concept}.json").write_text(json.dumps({"concept": concept, "seeds": args.seeds,
                                                              "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
