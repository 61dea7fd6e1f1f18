"""How often the base model draws a concept on each string attack's prompts, against the same prompts with the concept
taken out: an attack that draws the concept no more often than the concept-free prompt is the model's default look,
not a way back past an erasure, and no erasure of the concept's words can bring its success under that rate.

    OMP_NUM_THREADS=2 python benchmarks/attack_base_rates.py [--concepts outlined filled circle star] [--seeds 8] \\
        [--out benchmarks/takedowns/attack-base-rates.json]

Prints, per concept and attack kind, the share of the base model's images the probe reads as the concept, with the
concept-free rate (zerase.train.prompts.strip_concept of the attack's base prompts) beside it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from zerase.model.generate import generate
from zerase.model.pipeline import load_pipeline
from zerase.model.profiles import profile_for
from zerase.train.prompts import strip_concept
from zerase.world.evaluator import concept_prompts, world_attack_prompts
from zerase.world.profile import world_axis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", nargs="+", default=["outlined", "filled", "circle", "star"])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/takedowns/attack-base-rates.json"))
    args = parser.parse_args()
    pipe, profile = load_pipeline(), profile_for()
    evaluator, sampling = profile.evaluator(), profile.sampling
    if evaluator is None:
        raise SystemExit("the bundled model has no concept probe: run `zerase world build` first")
    seeds = list(range(args.seeds))

    def rate(concept: str, prompts: list[str]) -> float:
        batch = [p for p in prompts for _ in seeds]
        images = generate(pipe, batch, [s for _ in prompts for s in seeds], sampling)
        return sum(concept in read for read in evaluator.read(images, batch)) / len(batch)

    results: dict[str, dict[str, dict[str, object]]] = {}
    for concept in args.concepts:
        axis = world_axis(concept)
        if axis is None:
            raise SystemExit(f"{concept!r} is not a concept of the bundled world")
        base = concept_prompts(axis, concept).prompts
        # The attacks' base prompts (their first two, as the misspellings and synonyms use), then each attack kind.
        rows = {"the concept's prompts": base[:2],
                "concept taken out": list(dict.fromkeys(strip_concept(p, concept) for p in base[:2])),
                **world_attack_prompts(concept)}
        results[concept] = {kind: {"prompts": ps, "rate": rate(concept, ps)} for kind, ps in rows.items()}
        for kind, row in results[concept].items():
            print(f"{concept:10} {kind:22} {row['rate']:.2f}  {row['prompts'][:3]}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"seeds": args.seeds, "concepts": results}, indent=1))


if __name__ == "__main__":
    main()
