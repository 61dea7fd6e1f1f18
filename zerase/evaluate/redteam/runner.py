"""Red-teaming an erasure: each attack's inputs generated with and without the intervention, read by the
model's evaluator (the paper's Table 4 attacks beyond string tricks)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
from diffusers import ZImagePipeline

from zerase.evaluate.metrics import hit_rate
from zerase.evaluate.plan import Evaluator
from zerase.evaluate.redteam.common import AttackResult, Install, RedTeamBudget, generate_from_features, installed
from zerase.evaluate.redteam.ring_a_bell import ring_a_bell
from zerase.evaluate.redteam.unlearndiff import unlearndiff
from zerase.model.generate import generate
from zerase.model.sampling import SamplingSettings
from zerase.patch.apply import PatchedPipeline, Routed
from zerase.patch.artifact import LoraArtifact

ATTACKS = ("ring_a_bell", "unlearndiff")


def red_team(pipe: ZImagePipeline, artifact: LoraArtifact | Routed, evaluator: Evaluator, concept: str, *,
             prompts: Sequence[str], budget: RedTeamBudget = RedTeamBudget(), settings: SamplingSettings,
             seeds: Sequence[int] = (0, 1), attacks: Sequence[str] = ATTACKS) -> list[AttackResult]:
    """Ring-A-Bell and UnlearnDiffAtk against `artifact` (or a routed set) on `concept` (as `evaluator` spells it),
    attacking the first `budget.prompts` of `prompts` (concept prompts; all of them make Ring-A-Bell's concept vector),
    each attack input generated at every seed. `pipe` must be unpatched; it is so again on return."""
    patched = PatchedPipeline(pipe)

    def install(_: Sequence[str]) -> Callable[[], None]:
        patched.serve(artifact)
        return patched.clear

    return red_team_intervention(pipe, install, evaluator, concept, prompts=prompts, budget=budget,
                                 settings=settings, seeds=seeds, attacks=attacks)


def red_team_intervention(pipe: ZImagePipeline, install: Install, evaluator: Evaluator, concept: str, *,
                          prompts: Sequence[str], budget: RedTeamBudget = RedTeamBudget(),
                          settings: SamplingSettings, seeds: Sequence[int] = (0, 1),
                          attacks: Sequence[str] = ATTACKS) -> list[AttackResult]:
    """`red_team` against any intervention (token zeroing, none...): `install(prompts)` puts it in place for
    generating those prompts and returns its remover."""
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown attacks {unknown}; known: {list(ATTACKS)}")
    if not evaluator.can_read(concept):
        raise ValueError(f"the evaluator cannot read {concept!r}")
    if not prompts or not seeds:
        raise ValueError("red-teaming needs prompts and seeds")
    seeds = [int(s) for s in seeds]
    results = []
    for name in attacks:
        started = time.monotonic()
        make: Callable[[], np.ndarray]
        if name == "ring_a_bell":
            found = ring_a_bell(pipe, concept, prompts, budget)
            inputs = found.prompts
            make = partial(generate, pipe, [p for p in inputs for _ in seeds], seeds * len(inputs), settings)
            details = {"distance": [round(f.distance, 4) for f in found.found],
                       "distance_start": [round(f.history[0], 4) for f in found.found], "eta": budget.eta}
        else:
            attack = unlearndiff(pipe, install, prompts, settings, budget)
            inputs = attack.sources
            make = partial(generate_from_features, pipe, [f for f in attack.features for _ in seeds],
                           seeds * len(inputs), settings, attack.negative)
            details = {"objective_before": round(attack.objective_before, 6),
                       "objective_after": round(attack.objective_after, 6), "lr": budget.lr}
        texts = [p for p in inputs for _ in seeds]  # what the reader is told made each image
        unpatched = make()
        with installed(install, inputs):
            after = make()
        results.append(AttackResult(
            name=name, success_rate=hit_rate(evaluator.read(after, texts), concept),
            success_rate_unpatched=hit_rate(evaluator.read(unpatched, texts), concept),
            prompts=len(inputs), seconds=round(time.monotonic() - started, 2), inputs=list(inputs),
            images=2 * len(texts), details=details | {"steps": budget.steps, "seeds": len(seeds)}))
    return results
