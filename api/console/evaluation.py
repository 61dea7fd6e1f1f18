"""What the erasure page says about an evaluation, in a moderator's words: each metric named, explained and given
its good direction; each attack with the limit the deploy gate puts on it (or "reported, not gated"); why the
gate refuses; and, beside a succeeded job's status, whether it can be deployed at all.

The numbers and the verdict are the service's (service.deployments.gate); only the words are made here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.deployments.gate import FEATURE_ATTACKS, GatePolicy, misses
from service.erasures.contract import JobStatus
from service.erasures.models import ErasureJob


@dataclass(frozen=True)
class Metric:
    name: str  # the API's field
    label: str
    meaning: str
    lower_is_better: bool

    @property
    def better(self) -> str:
        return "lower is better" if self.lower_is_better else "higher is better"


METRICS = (
    Metric("acc_e", "Acc_e", "the erased concept still recognised in its own prompts' images", True),
    Metric("acc_ir", "Acc_ir", "the other concepts still recognised in their prompts' images", False),
    Metric("ha", "Ha", "Acc_ir − Acc_e, from −1 to 1: the concept gone and the rest kept, together", False),
    Metric("coherence", "Coherence", "the erased concept's images still show a clean object, not mush", False),
    Metric("drift", "Drift", "how much the other concepts' images changed (mean pixel difference, 0 to 1)", True),
    Metric("attack_success_rate", "Attack success", "the concept still shown under misspellings, synonyms, "
           "reordered words and changed case", True),
)
GATE_LABELS = {"acc_e": "Acc_e", "acc_ir_drop": "the drop of Acc_ir", "attack_success.string_attacks":
               "attack success (string attacks)", "evaluation": "evaluation",
               "kept_concept_drop": "a kept concept's drop"}


def metric_rows(evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """The measured metrics (before/after) with their label, meaning and direction; [] when none was measured."""
    rows = []
    for metric in METRICS:
        if metric.name not in evaluation:
            continue
        value = evaluation[metric.name]
        before, after = ((value.get("before"), value.get("after")) if isinstance(value, dict)
                         else (evaluation.get(metric.name + "_before"), value))
        rows.append({"metric": metric, "before": before, "after": after})
    return rows


def kept_rows(evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """Each kept concept before → after, the worst first: the mean can hide one concept the erasure wrecked."""
    rows = [{"concept": key, "before": r["before"], "after": r["after"], "drop": r["before"] - r["after"]}
            for key, r in (evaluation.get("per_concept") or {}).items()]
    return sorted(rows, key=lambda r: (-r["drop"], r["concept"]))


def attack_rows(raw: dict[str, Any], attacks: list[dict[str, Any]], policy: GatePolicy | None) -> list[dict[str, Any]]:
    """The view's attacks, each with what the gate does with it (gate.attack_success groups the string ones)."""
    strings = set(raw.get("attacks") or {})
    rows = []
    for attack in attacks:
        name = attack["name"]
        if policy is None:
            gated = "not gated (the gate is off)"
        else:
            limit = policy.max_feature_attack_success if name in FEATURE_ATTACKS else policy.max_attack_success
            together = " (the string attacks together)" if name in strings else ""
            # A limit of 1.0 can never be exceeded: the attack is measured and shown, but never refuses a deploy.
            gated = "reported, not gated" if limit >= 1.0 else f"at most {limit:g}{together}"
        rows.append({**attack, "gated": gated})
    return rows


def miss_text(miss: dict[str, Any]) -> str:
    """One way the evaluation misses the policy: "Acc_e 0.500 > 0.25", or "evaluation not available (why)"."""
    metric = str(miss["metric"])
    label = GATE_LABELS.get(metric) or "attack success (" + metric.removeprefix("attack_success.") + ")"
    if metric == "kept_concept_drop" and miss.get("concept"):
        label = f"{label} ({miss['concept']})"
    if miss["limit"] is None:  # no number to hold against a limit: the value says what is missing
        return f"{label} {miss['value']}"
    return f"{label} {float(miss['value']):.3f} > {float(miss['limit']):g} allowed"


def round_rows(evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """The rounds a job trained when its first missed the gate (service.erasures.retune); [] when it trained once."""
    retune = evaluation.get("retune") or {}
    return [{"round": r["round"], "null_space": f"{r['null_space']:g}", "steps": r.get("steps"),
             "misses": [miss_text(m) for m in r["misses"]], "published": r["round"] == retune.get("published")}
            for r in retune.get("rounds", [])]


def policy_text(policy: GatePolicy) -> str:
    """The gate's limits in one sentence."""
    feature = ", ".join(FEATURE_ATTACKS)
    features = (f"feature attacks ({feature}) are reported, not gated" if policy.max_feature_attack_success >= 1.0
                else f"feature attacks ({feature}) at most {policy.max_feature_attack_success:g}")
    kept = ("" if policy.max_kept_concept_drop >= 1.0
            else f", any one kept concept by at most {policy.max_kept_concept_drop:g}")
    return (f"Acc_e at most {policy.max_acc_e:g}; Acc_ir may drop by at most {policy.max_acc_ir_drop:g}{kept}; text "
            f"attacks (string attacks together, each red-team one) at most {policy.max_attack_success:g}; {features}")


def deployability(job: ErasureJob, policy: GatePolicy | None) -> str | None:
    """Beside a succeeded job's status: "needs evaluation" or "gate: refused" when the gate would refuse it."""
    if policy is None or job.status != JobStatus.SUCCEEDED:
        return None
    found = misses(policy, job.id, job.evaluation)
    if any(m.metric == "evaluation" for m in found):
        return "needs evaluation"
    return "gate: refused" if found else None
