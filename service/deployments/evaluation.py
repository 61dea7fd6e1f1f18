"""A worker's side of judging deployments as served: claim a queued version, evaluate its set under the combined
patch (zerase.evaluate.served_evaluation) on the process's own model, store the result, then settle the activation that
waits on it. The database is the queue: the embedded worker thread and every `zerase worker` poll it, and a claim
left by a worker that died is taken again after a while.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from service.audit.service import Actor, record
from service.core.db import session_factory
from service.core.settings import Settings
from service.core.store import store_for
from service.core.tables import utcnow
from service.deployments import service as deployments
from service.deployments.contract import FUSED, ROUTED
from service.deployments.gate import GatePolicy
from service.deployments.judging import EvaluationStatus
from service.deployments.models import Deployment
from service.deployments.serving import local_copy
from service.erasures.models import ErasureJob

log = logging.getLogger(__name__)
EVALUATOR = Actor("deployment evaluation")


def claim_next(db: Session, settings: Settings) -> int | None:
    """The oldest queued version (or one whose worker went silent), marked running; committed."""
    stale = utcnow() - timedelta(seconds=settings.evaluation_budget_s + settings.stale_after_s)
    candidate = db.scalar(select(Deployment.version).where(or_(
        Deployment.evaluation_status == EvaluationStatus.QUEUED,
        (Deployment.evaluation_status == EvaluationStatus.RUNNING) & (Deployment.evaluation_started_at < stale)))
        .order_by(Deployment.version).limit(1))
    if candidate is None:
        db.rollback()
        return None
    # Compare-and-set: of two workers, one moves it to running.
    claimed = db.execute(update(Deployment).where(
        Deployment.version == candidate,
        or_(Deployment.evaluation_status == EvaluationStatus.QUEUED, Deployment.evaluation_started_at < stale))
        .values(evaluation_status=EvaluationStatus.RUNNING, evaluation_started_at=utcnow()))
    db.commit()
    return candidate if claimed.rowcount == 1 else None  # type: ignore[attr-defined]


def evaluate_next(settings: Settings) -> int | None:
    """Evaluate one queued version, if any, and settle its waiting activation; the version, or None."""
    sessions = session_factory(settings.database_url)
    with sessions() as db:
        version = claim_next(db, settings)
    if version is None:
        return None
    started = time.monotonic()
    try:
        evaluation = _evaluate(version, settings)
    except Exception as exc:
        log.exception("evaluation of deployment version %d failed", version)
        evaluation = {"status": EvaluationStatus.FAILED, "error": f"{type(exc).__name__}: {exc}"}
    evaluation["seconds"] = round(time.monotonic() - started, 2)
    with sessions() as db:
        deployment = deployments.get(db, version)
        deployment.evaluation, deployment.evaluation_status = evaluation, evaluation["status"]
        record(db, EVALUATOR, "deployment.evaluate", f"deployment:{version}", _summary(evaluation))
        db.commit()
        deployments.settle(db, version, GatePolicy.of(settings))
    log.info("deployment version %d judged as served in %.1fs", version, evaluation["seconds"])
    return version


def _evaluate(version: int, settings: Settings) -> dict[str, Any]:
    from service.erasures.runner import base_pipeline, model_in_use
    from zerase.evaluate.evaluators.select import evaluator_for
    from zerase.evaluate.served_evaluation import Served, evaluate_served
    from zerase.model.profiles import profile_for
    from zerase.patch.artifact import load_artifact

    with session_factory(settings.database_url)() as db:
        deployment = deployments.get(db, version)
        entries, fusion, fused = list(deployment.entries), deployment.fusion, deployment.fused
        categories = {e["erasure_id"]: _category(db, e["erasure_id"]) for e in entries}
    profile = profile_for(settings.model_dir)
    store, cache = store_for(settings), settings.var_dir.resolve() / "patch-cache"
    with model_in_use:  # training and job reports patch the same pipeline
        pipe = base_pipeline(settings)
        served = [Served(e["erasure_id"], load_artifact(local_copy(store, cache, e["uri"], e["sha256"]), pipe),
                         float(e["weight"]), categories[e["erasure_id"]]) for e in entries]
        if fusion in FUSED and fused is None:
            fused = _fuse(pipe, served, profile, store, version, settings, fusion)
        patch = [load_artifact(local_copy(store, cache, fused["uri"], fused["sha256"]), pipe)] if fused else None
        routed, routing = None, None
        if fusion == ROUTED and patch is not None:  # judged as /generate routes it (service.deployments.serving)
            from zerase.serve.routing import routed_for

            # Categories as the entries record them, as every generation process reads them.
            routed, routing = routed_for(pipe, profile, [e.artifact for e in served], patch[0],
                                         categories=[e.get("category") for e in entries])
            patch = None
        kinds = set(categories.values())
        evaluator = evaluator_for(profile, kinds.pop() if len(kinds) == 1 else None, clip_dir=settings.clip_dir,
                                  nudenet=settings.nudenet, prompts=settings.evaluation_prompts,
                                  device=settings.device)
        if evaluator is None or not all(evaluator.can_read(e["concept"]) for e in entries):
            return {"status": EvaluationStatus.FAILED,
                    "skipped": "no evaluator of this model reads every concept of the set (on a real model: "
                               "ZERASE_CLIP_DIR, one category per set)"}
        attack = _ring_a_bell(pipe, evaluator, settings) if settings.redteam else None
        result = evaluate_served(pipe, served, evaluator, profile.sampling, n_seeds=settings.evaluation_seeds,
                                 kept_images=settings.deployment_kept_images, attack=attack, patch=patch,
                                 routed=routed)
    return {"status": EvaluationStatus.EVALUATED, "fusion": fusion or "average", **result,
            **({"routing": routing} if routing is not None else {})}


def _fuse(pipe: Any, served: list[Any], profile: Any, store: Any, version: int, settings: Settings, method: str
          ) -> dict[str, Any]:
    """The set's fused patch (zerase.serve.fusion's closed form on `fusion_prompts`; "consolidated": then trained
    further, zerase.serve.consolidation), stored like any artifact and recorded on the version."""
    import tempfile
    from pathlib import Path

    from zerase.serve.fusion import save_fused
    from zerase.serve.served_patch import served_patch

    started = time.monotonic()
    fused = served_patch(pipe, [e.artifact for e in served], profile, method)
    with tempfile.TemporaryDirectory() as tmp:
        stored = store.put(save_fused(fused, Path(tmp) / "fused.safetensors"))
    record_ = {"uri": stored.uri, "sha256": stored.sha256, "bytes": stored.bytes, "rank": fused.metadata["rank"],
               "method": method, "seconds": round(time.monotonic() - started, 2)}
    with session_factory(settings.database_url)() as db:
        deployments.get(db, version).fused = record_
        record(db, EVALUATOR, "deployment.fuse", f"deployment:{version}", record_)
        db.commit()
    return record_


def _ring_a_bell(pipe: Any, evaluator: Any, settings: Settings) -> Any:
    """Ring-A-Bell on each erased concept under the combined patch (text prompts: what a client can send)."""
    from zerase.evaluate.redteam.common import RedTeamBudget
    from zerase.evaluate.redteam.runner import red_team_intervention
    from zerase.model.profiles import profile_for

    budget = RedTeamBudget(prompts=settings.redteam_prompts, steps=settings.redteam_steps)
    sampling = profile_for(settings.model_dir).sampling

    def attack(concept: str, prompts: list[str], install: Any) -> list[dict[str, Any]]:
        found = red_team_intervention(pipe, lambda _: install(), evaluator, concept, prompts=prompts, budget=budget,
                                      settings=sampling, attacks=("ring_a_bell",))[0]
        return [{"name": found.name, "success_rate": found.success_rate,
                 "success_rate_unpatched": found.success_rate_unpatched, "prompts": found.prompts,
                 "inputs": found.inputs, "seconds": found.seconds}]

    return attack


def _category(db: Session, erasure_id: str) -> str | None:
    job = db.get(ErasureJob, erasure_id)
    return job.category if job is not None else None


def _summary(evaluation: dict[str, Any]) -> dict[str, Any]:
    """What the audit line keeps: each concept's Acc_e and the kept set's Acc_ir, before → after."""
    if evaluation["status"] != EvaluationStatus.EVALUATED:
        return {k: evaluation.get(k) for k in ("status", "error", "skipped")}
    return {"status": evaluation["status"], "seconds": evaluation.get("seconds"),
            "concepts": [{"erasure_id": c["label"], "concept": c["concept"], "acc_e_before": c["acc_e_before"],
                          "acc_e": c["acc_e"]} for c in evaluation["concepts"]],
            "acc_ir_before": evaluation["kept"]["acc_ir_before"], "acc_ir": evaluation["kept"]["acc_ir"]}
