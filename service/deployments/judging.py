"""The one gate check of what /generate serves: every path that changes it (create, deploy, retire, activate, and
the approvals and auto-deploy that run them) judges the version as it would be served.

A single erasure at weight 1 is served exactly as its job evaluated it, so its job's evaluation judges it. Any
other set is judged by its own evaluation (zerase.evaluate.served_evaluation, run by a worker): until it has one, a
change that needs it waits for it (the version is queued for evaluation and activated by the worker if it passes),
unless one of its erasures already fails alone. An admin may force any of it; the misses forced are audited each time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from service.audit.service import Actor
from service.core.errors import Forbidden
from service.deployments.gate import GatePolicy, GateRefused, Miss, misses, served_misses
from service.deployments.models import Deployment
from service.erasures.models import ErasureJob

UNEVALUATED = "not evaluated as served yet"


class EvaluationStatus:
    QUEUED, RUNNING, EVALUATED, FAILED = "queued", "running", "evaluated", "failed"


@dataclass(frozen=True)
class Verdict:
    forced: list[Miss] = field(default_factory=list)  # what an admin forced past (to audit)
    waiting: bool = False  # the set needs its own evaluation first


def needs_own_evaluation(entries: Sequence[dict[str, Any]]) -> bool:
    """Whether serving `entries` differs from what any one job evaluated (several patches, or a weight ≠ 1)."""
    return len(entries) > 1 or any(abs(float(e["weight"]) - 1.0) > 1e-9 for e in entries)


def gate_misses(db: Session, entries: Sequence[dict[str, Any]], gate: GatePolicy | None,
                deployment: Deployment | None = None) -> list[Miss]:
    """What the gate finds wrong with serving `entries` (as `deployment`, when it exists); [] when it passes or is
    off. An unevaluated set adds one UNEVALUATED miss after its erasures' own misses."""
    if gate is None:
        return []
    own: list[Miss] = []
    for entry in entries:
        job = db.get(ErasureJob, entry["erasure_id"])
        own += misses(gate, entry["erasure_id"], job.evaluation if job is not None else None)
    if not needs_own_evaluation(entries):
        return own
    if deployment is not None and deployment.evaluation_status in (EvaluationStatus.EVALUATED,
                                                                    EvaluationStatus.FAILED):
        return served_misses(gate, deployment.version, deployment.evaluation,
                             {e["erasure_id"]: e["erasure_id"] for e in entries})
    return [*own, Miss(None, "evaluation", UNEVALUATED, None, version=deployment.version if deployment else None)]


def gate_check(db: Session, entries: Sequence[dict[str, Any]], actor: Actor, gate: GatePolicy | None,
               force: bool = False, deployment: Deployment | None = None) -> Verdict:
    """Refused (409 `deploy_gate`) unless it passes, an admin forces it, or all it lacks is its own evaluation
    (then `waiting`); a non-admin's `force` is a 403."""
    if force and actor.role != "admin":
        raise Forbidden(f"only admin keys may force a deployment past the gate; {actor.name!r} is a "
                        f"{actor.role or 'system actor'}", "force")
    missed = gate_misses(db, entries, gate, deployment)
    if not missed:
        return Verdict()
    if force:
        return Verdict(forced=missed)
    if all(m.metric == "evaluation" and m.value == UNEVALUATED for m in missed):
        return Verdict(waiting=True)
    raise GateRefused(missed)
