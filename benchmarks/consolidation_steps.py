"""How long the consolidation trains, on the celebrity protocol's 12 erased characters: the cached erasures of
`benchmarks/takedowns.py` (training seed 0, today's defaults; run it first), distilled by
zerase.serve.consolidation at each setting given, then judged as served (zerase.evaluate.served_evaluation).

    OMP_NUM_THREADS=2 python benchmarks/consolidation_steps.py 's300={"steps": 300}' 's1200={"steps": 1200}' \
        [--out benchmarks/takedowns/consolidation-steps]

Each NAME=JSON is a ConsolidationSettings override (and "init": false to start from zero, not the closed form);
each result is written to --out/NAME.json as soon as it is done.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from takedowns import ERASED_CHARACTERS, trained

from zerase.evaluate.served_evaluation import Served, evaluate_served
from zerase.model.pipeline import load_pipeline
from zerase.model.profiles import profile_for
from zerase.serve.consolidation import ConsolidationSettings, consolidate
from zerase.serve.fusion import fuse_closed_form, fusion_prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("settings", nargs="+", help='NAME=JSON, e.g. s1200={"steps": 1200}')
    parser.add_argument("--cache", type=Path, default=Path("var/takedowns"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/takedowns/consolidation-steps"))
    args = parser.parse_args()
    pipe = load_pipeline(None, "cpu", torch.float32)
    profile = profile_for(None)
    evaluator, sampling = profile.evaluator(), profile.sampling
    assert evaluator is not None
    concepts = list(ERASED_CHARACTERS)
    artifacts = [trained(pipe, c, 0, args.cache) for c in concepts]
    own, keep = fusion_prompts(profile, artifacts)
    closed = fuse_closed_form(pipe, artifacts, own, keep, sampling)
    args.out.mkdir(parents=True, exist_ok=True)
    for item in args.settings:
        name, raw = item.split("=", 1)
        overrides = json.loads(raw)
        init = closed if overrides.pop("init", True) else None
        started = time.monotonic()
        fused = consolidate(pipe, artifacts, own, keep, sampling, ConsolidationSettings(**overrides), init=init)
        build_s = time.monotonic() - started
        served = [Served(c, a, 1.0, "celebrity") for c, a in zip(concepts, artifacts, strict=True)]
        report = evaluate_served(pipe, served, evaluator, sampling, patch=[fused])
        acc = {c["concept"]: c["acc_e"] for c in report["concepts"]}
        row = {"name": name, "settings": overrides, "init": "closed_form" if init is not None else None,
               "build_s": round(build_s, 1), "acc_e": acc, "mean_acc_e": sum(acc.values()) / len(acc),
               "max_acc_e": max(acc.values()), "kept_before": report["kept"]["acc_ir_before"],
               "kept": report["kept"]["acc_ir"], "worst_kept": report["kept"]["worst"]}
        (args.out / f"{name}.json").write_text(json.dumps(row, indent=1))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
