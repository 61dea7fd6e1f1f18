"""Prompts that hide an erased concept from the router: Ring-A-Bell's (zerase.evaluate.redteam.ring_a_bell: token
strings whose text features approach the concept's, never spelling it), found on the base model for each concept of
a set, then generated on the base model, routed without a fallback (a prompt naming none of the erasures gets the
base model) and routed as the service serves it (such a prompt gets the set's consolidated fallback). What the
fallback is for: the takedowns benchmark's string attacks are nearly all read by the router.

    OMP_NUM_THREADS=2 python benchmarks/hidden_prompts.py [--set Mira,Toko,...] [--out benchmarks/takedowns]

Each concept's row is written to --out/hidden-<set>.json as soon as it is done, and skipped when it is there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from takedowns import ERASED_CHARACTERS, model_id, trained

from zerase.evaluate.metrics import hit_rate
from zerase.evaluate.plan import ERASED
from zerase.evaluate.redteam.common import RedTeamBudget
from zerase.evaluate.redteam.ring_a_bell import ring_a_bell
from zerase.evaluate.served_evaluation import Served, served_plan
from zerase.model.generate import generate
from zerase.model.pipeline import load_pipeline
from zerase.model.profiles import profile_for
from zerase.patch.apply import PatchedPipeline, Routed
from zerase.serve.routing import routed_for
from zerase.serve.served_patch import served_patch
from zerase.world.profile import world_category

SEEDS = (0, 1, 2, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", default=",".join(ERASED_CHARACTERS), help="comma-separated concepts")
    parser.add_argument("--cache", type=Path, default=Path("var/takedowns"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/takedowns"))
    args = parser.parse_args()
    concepts = args.set.split(",")
    pipe = load_pipeline(None, "cpu", torch.float32)
    profile = profile_for(None)
    evaluator, sampling = profile.evaluator(), profile.sampling
    assert evaluator is not None
    categories = [world_category(c) for c in concepts]
    artifacts = [trained(pipe, c, 0, args.cache) for c in concepts]
    path = args.out / f"hidden-{'+'.join(concepts)}.json"
    result: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if result.get("model") != model_id(pipe):
        result = {"model": model_id(pipe), "set": concepts, "seeds": list(SEEDS), "concepts": {}}
    fallback = served_patch(pipe, artifacts, profile, "routed")  # as a worker makes it for the version
    served: dict[str, Routed] = {
        "routed_only": routed_for(pipe, profile, artifacts, None, categories=categories)[0],
        "routed": routed_for(pipe, profile, artifacts, fallback, categories=categories)[0]}
    plan = served_plan(evaluator, [Served(c, a, 1.0, k) for c, a, k in zip(concepts, artifacts, categories,
                                                                              strict=True)], len(SEEDS), 8)
    patched = PatchedPipeline(pipe)
    for concept in concepts:
        if concept in result["concepts"]:
            continue
        prompts = list(dict.fromkeys(s.prompt for s in plan.shots if s.role == ERASED and s.concept == concept))
        found = ring_a_bell(pipe, concept, prompts, RedTeamBudget(prompts=len(prompts))).prompts
        texts = [p for p in found for _ in SEEDS]
        seeds = list(SEEDS) * len(found)
        row: dict[str, Any] = {"prompts": found, "base": hit_rate(evaluator.read(
            generate(pipe, texts, seeds, sampling), texts), concept)}
        for name, routed in served.items():
            patched.apply_routed(routed)
            try:
                row[name] = hit_rate(evaluator.read(generate(pipe, texts, seeds, sampling), texts), concept)
            finally:
                patched.clear()
            row[f"{name}_routes"] = [list(r) for r in routed.route(found)]
        result["concepts"][concept] = row
        path.write_text(json.dumps(result, indent=1))
        print(concept, {k: row[k] for k in ("base", "routed_only", "routed")}, flush=True)
    rows = [result["concepts"][c] for c in concepts if c in result["concepts"]]
    print("mean over", len(rows), {k: round(sum(r[k] for r in rows) / max(len(rows), 1), 3)
                                   for k in ("base", "routed_only", "routed")})


if __name__ == "__main__":
    main()
