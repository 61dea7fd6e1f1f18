"""The deploy gate: an erasure reaches /generate only if its evaluation says it works.

A policy of limits (settings): Acc_e after the erasure, the drop of Acc_ir (the mean, and each kept concept's
own where the evaluation drew enough images of it), and attack success rates:
the string attacks together and Ring-A-Bell (text prompts: what a /generate client can send) under one
limit, UnlearnDiffAtk under its own. UnlearnDiffAtk optimises the caption features directly, which needs
the weights and a way past the text encoder that the service's API does not offer, so by default it is
reported and not gated (its limit is 1.0); an operator who serves features may tighten it. An erasure with no
evaluation (skipped, failed, or not run) misses the policy too: nobody can tell it works. An admin
may force a deployment past the gate; that is audited with the failing metrics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from service.core.errors import Conflict
from service.core.settings import Settings

FEATURE_ATTACKS = ("unlearndiff",)  # attacks on caption features rather than on prompt text
MIN_IMAGES_EACH = 4  # fewer images of a kept concept cannot tell one unlucky image from damage


@dataclass(frozen=True)
class GatePolicy:
    max_acc_e: float
    max_acc_ir_drop: float
    max_attack_success: float  # string attacks, Ring-A-Bell: attacks in text
    max_feature_attack_success: float = 1.0  # UnlearnDiffAtk: an attack on the caption features
    max_kept_concept_drop: float = 1.0  # any single kept concept's drop

    @classmethod
    def of(cls, settings: Settings) -> GatePolicy | None:
        """The configured policy; None when the gate is off (ZERASE_DEPLOY_GATE=false)."""
        if not settings.deploy_gate:
            return None
        return cls(settings.gate_max_acc_e, settings.gate_max_acc_ir_drop, settings.gate_max_attack_success,
                   settings.gate_max_feature_attack_success, settings.gate_max_kept_concept_drop)


@dataclass(frozen=True)
class Miss:
    """One way an evaluation misses the policy: an erasure's own, or a deployment's as served (then `concept`
    names the concept that came back; a kept-set miss has no erasure)."""

    erasure_id: str | None
    metric: str  # acc_e, acc_ir_drop, kept_concept_drop, attack_success (with the attack's name), or evaluation
    value: float | str | None
    limit: float | None
    concept: str | None = None
    version: int | None = None  # judged as served in this deployment version

    def describe(self) -> str:
        who = f"erasure {self.erasure_id}" if self.erasure_id else "the kept concepts"
        if self.concept:
            who = f"{self.concept!r} ({who})"
        if self.version is not None:
            who += f" as served in version {self.version}"
        if self.limit is None or not isinstance(self.value, (int, float)):
            return f"{who}: {self.metric} is {self.value}"
        return f"{who}: {self.metric} {self.value:.3f} > {self.limit:g}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class GateRefused(Conflict):
    code = "deploy_gate"

    def __init__(self, misses: list[Miss]) -> None:
        first = misses[0]
        super().__init__("the deploy gate refuses: " + "; ".join(m.describe() for m in misses)
                         + " (an admin may deploy it anyway with force: true)", first.metric, "evaluation")
        self.misses = misses
        self.extra = {"gate": [m.to_dict() for m in misses]}


def attack_success(evaluation: dict[str, Any]) -> dict[str, float]:
    """Success rate after the erasure, per attack: the string attacks together, then each red-team attack."""
    rates = {}
    if "attack_success_rate" in evaluation:
        rates["string_attacks"] = float(evaluation["attack_success_rate"]["after"])
    for attack in evaluation.get("redteam", []):
        rates[attack["name"]] = float(attack["success_rate"])
    return rates


def kept_concept_misses(policy: GatePolicy, per_concept: dict[str, dict[str, float]], images_each: int,
                        erasure_id: str | None, version: int | None = None) -> list[Miss]:
    """Each kept concept that dropped past its limit, worst first (none when too few images of each were drawn:
    one image per concept is a coin flip, not a measurement)."""
    if images_each < MIN_IMAGES_EACH:
        return []
    # The largest drop first, a tie by name (zerase.evaluate.metrics.worst_kept names the same one).
    drops = sorted(((r["before"] - r["after"], key) for key, r in per_concept.items()), key=lambda d: (-d[0], d[1]))
    return [Miss(erasure_id, "kept_concept_drop", drop, policy.max_kept_concept_drop, key, version)
            for drop, key in drops if drop > policy.max_kept_concept_drop]


def served_misses(policy: GatePolicy, version: int, evaluation: dict[str, Any] | None,
                  labels: dict[str, str]) -> list[Miss]:
    """Every limit a deployment's own evaluation (zerase.evaluate.served_evaluation) misses; `labels` maps its entries'
    labels to erasure ids. Each erased concept under the combined patch, then the kept set against the base."""
    if not evaluation or "concepts" not in evaluation:
        why = (evaluation or {}).get("skipped") or (evaluation or {}).get("error") or "missing"
        return [Miss(None, "evaluation", f"not available as served ({why})", None, version=version)]
    out = []
    for c in evaluation["concepts"]:
        erasure_id, concept = labels.get(c["label"], c["label"]), c["concept"]
        if c["acc_e"] > policy.max_acc_e:
            out.append(Miss(erasure_id, "acc_e", float(c["acc_e"]), policy.max_acc_e, concept, version))
        for name, rate in attack_success(c).items():
            limit = policy.max_feature_attack_success if name in FEATURE_ATTACKS else policy.max_attack_success
            if rate > limit:
                out.append(Miss(erasure_id, f"attack_success.{name}", rate, limit, concept, version))
    kept = evaluation["kept"]
    drop = float(kept["acc_ir_before"]) - float(kept["acc_ir"])
    if drop > policy.max_acc_ir_drop:
        worst = (kept.get("worst") or {}).get("concept")
        out.append(Miss(None, "acc_ir_drop", drop, policy.max_acc_ir_drop, worst and f"worst: {worst}", version))
    return out + kept_concept_misses(policy, kept.get("per_concept", {}), int(kept.get("images_each", 0)), None,
                                     version)


def misses(policy: GatePolicy, erasure_id: str, evaluation: dict[str, Any] | None) -> list[Miss]:
    """Every limit the evaluation misses ([]: it passes)."""
    if not evaluation or "acc_e" not in evaluation:
        why = (evaluation or {}).get("skipped") or (evaluation or {}).get("error") or "missing"
        return [Miss(erasure_id, "evaluation", f"not available ({why})", None)]
    out = []
    if evaluation["acc_e"] > policy.max_acc_e:
        out.append(Miss(erasure_id, "acc_e", float(evaluation["acc_e"]), policy.max_acc_e))
    drop = float(evaluation["acc_ir_before"]) - float(evaluation["acc_ir"])
    if drop > policy.max_acc_ir_drop:
        out.append(Miss(erasure_id, "acc_ir_drop", drop, policy.max_acc_ir_drop))
    out += kept_concept_misses(policy, evaluation.get("per_concept", {}), int(evaluation.get("kept_images", 0)),
                               erasure_id)
    for name, rate in attack_success(evaluation).items():
        limit = policy.max_feature_attack_success if name in FEATURE_ATTACKS else policy.max_attack_success
        if rate > limit:
            out.append(Miss(erasure_id, f"attack_success.{name}", rate, limit))
    return out
