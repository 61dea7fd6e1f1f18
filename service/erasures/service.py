"""The erasure jobs as the API uses them: submit (with presets and idempotency), read, list, cancel,
retry, events. Each function commits its own transaction. The state machine itself (and the
worker's side of a job's life) is in service.erasures.lifecycle.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.audit.service import Actor, record
from service.core.errors import Forbidden
from service.core.tables import utcnow
from service.erasures import idempotency
from service.erasures import quota as quotas
from service.erasures.contract import EventKind, JobStatus
from service.erasures.errors import IdempotencyConflict, InvalidJobRequest, JobStateConflict
from service.erasures.lifecycle import add_event, finish, fresh, get_job, transition
from service.erasures.models import ErasureJob, IdempotencyKey, JobEvent
from service.erasures.quota import Quota
from service.keys.contract import Role
from zerase.model.captions import MAX_CAPTION_TOKENS
from zerase.model.profiles import ModelProfile, profile_for
from zerase.train.presets import Resolved, resolve_request
from zerase.train.prompts import erase_prompts


@dataclass(frozen=True)
class JobSpec:
    """What a moderator asks for; `overrides` are eta/steps/rank/seed when given."""

    concept: str
    category: str
    preservation: list[str] | None
    anchor: str | None
    epsilon: float | None
    overrides: dict[str, Any]
    reason: str | None
    requested_by: str
    auto_deploy: bool = False
    priority: int = 0  # higher runs first; only admins may set it (the API checks)
    protect_unnamed: bool = True  # `preservation` adds to the service's prior (zerase.train.presets.unnamed_prior)
    mitigate: str | None = None  # "immediate": a prompt guard serves the takedown while it trains

    def sha256(self) -> str:
        """A fingerprint of the request, for matching Idempotency-Key replays."""
        return hashlib.sha256(json.dumps(self.__dict__, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Submitted:
    job_id: str
    response: dict[str, Any]  # the body to send (first response, or its replay)
    replayed: bool


def resolve_config(spec: JobSpec, model_dir: Path | None,
                   training: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Category presets fill what the request leaves out (ε per Table 6, anchor, preservation); the
    operator's `training` settings, then the profile of the model the workers load, fix how training
    samples (schedule, guidance, resolution, batch). All plain data: no torch in the control plane."""
    return _resolve(spec, model_dir, training).config.to_dict()


def _resolve(spec: JobSpec, model_dir: Path | None, training: Mapping[str, Any] | None) -> Resolved:
    profile = profile_for(model_dir)
    try:
        resolved = resolve_request(spec.concept, spec.category, preservation=spec.preservation, anchor=spec.anchor,
                                   epsilon=spec.epsilon, model=profile, protect_unnamed=spec.protect_unnamed,
                                   **{**(training or {}), **spec.overrides})
    except (ValueError, TypeError) as exc:
        raise InvalidJobRequest(str(exc)) from exc
    _check_caption_lengths(spec, resolved.config.concept, resolved.config.erase_prompts, profile)
    return resolved


def _check_caption_lengths(spec: JobSpec, concept: str, extra: list[str], profile: ModelProfile) -> None:
    """Every training prompt must fit the caption the pipeline keeps, counted as it counts: in tokens of the
    chat-templated text (200 emoji are over 800), not in characters."""
    limit = MAX_CAPTION_TOKENS
    for prompt in erase_prompts(concept, extra):
        if (n := profile.captions.count(prompt)) > limit:
            raise InvalidJobRequest(f"the concept makes a {n}-token caption ({prompt[:40]!r}...); at most {limit} "
                                    "tokens, chat template included", "concept")
    for i, item in enumerate(spec.preservation or []):
        if (n := profile.captions.count(item)) > limit:
            raise InvalidJobRequest(f"a {n}-token caption; at most {limit} tokens, chat template included",
                                    f"preservation[{i}]")


def submit(db: Session, spec: JobSpec, model_dir: Path | None, render: Callable[[ErasureJob], dict[str, Any]],
           idempotency_key: str | None = None, actor: Actor | None = None, *, quota: Quota | None = None,
           idempotency_ttl_s: float = 24 * 3600, training: Mapping[str, Any] | None = None) -> Submitted:
    """Create a queued job (committed, audited), within the acting key's `quota`. With an Idempotency-Key,
    a repeat of the request by the same API key within `idempotency_ttl_s` replays the first response
    (and is not audited again); other keys' use of the same header value is their own."""
    actor = actor or Actor(spec.requested_by)
    if spec.priority and actor.role is not None and actor.role != Role.ADMIN:
        raise Forbidden(f"only admin keys may set a priority; {actor.name!r} is a {actor.role}", "priority")
    fingerprint = spec.sha256()
    scoped = idempotency.scoped(actor, idempotency_key) if idempotency_key else None
    if scoped and (replay := _replay(db, scoped, idempotency_key, fingerprint, idempotency_ttl_s)):
        return replay
    resolved = _resolve(spec, model_dir, training)
    config = resolved.config.to_dict()
    if quota is not None and actor.key_id is not None:
        quotas.check(db, actor.key_id, config, quota)
    job = ErasureJob(concept=spec.concept, category=spec.category, config=config, reason=spec.reason,
                     requested_by=spec.requested_by, status=JobStatus.QUEUED, auto_deploy=spec.auto_deploy,
                     priority=spec.priority, requested_key_id=actor.key_id, mitigate=spec.mitigate)
    db.add(job)
    db.flush()
    add_event(db, job.id, EventKind.STATE, "queued", {"status": "queued", "requested_by": spec.requested_by})
    if resolved.dropped:
        n = len(resolved.dropped)
        which = "1 preservation entry shows the concept and was" if n == 1 else \
            f"{n} preservation entries show the concept and were"
        names = ", ".join(repr(p) for p in resolved.dropped)  # named: the moderator can tell which ones
        add_event(db, job.id, EventKind.INFO, f"{which} left out (a prompt cannot be both erased and preserved): "
                  f"{names}", {"dropped": resolved.dropped})
    if resolved.added:
        kinds = {"neighbours": "the concept's neighbours", "without_concept": "its prompts without it",
                 "general": "general captions"}
        counts = ", ".join(f"{len(v)} {kinds.get(k, k)}" for k, v in resolved.added.items())
        add_event(db, job.id, EventKind.INFO, f"preserving {len(config['preservation'])} prompts: what was listed "
                  f"and, added by the service so that what nobody named survives, {counts}", {"added": resolved.added})
    record(db, actor, "erasure.submit", job.id,
           {"concept": spec.concept, "category": spec.category, "reason": spec.reason, "priority": spec.priority})
    response = render(job)
    if scoped:
        db.add(IdempotencyKey(key=scoped, request_sha256=fingerprint, job_id=job.id, response=response))
    try:
        db.commit()
    except IntegrityError:
        # A concurrent request with the same key committed first: answer as it did.
        db.rollback()
        if scoped and idempotency_key and (replay := _replay(db, scoped, idempotency_key, fingerprint,
                                                             idempotency_ttl_s)):
            return replay
        raise
    return Submitted(job.id, response, replayed=False)


def _replay(db: Session, scoped: str, shown: str | None, fingerprint: str, ttl_s: float) -> Submitted | None:
    row = idempotency.live(db, scoped, ttl_s)
    if row is None:
        return None
    if row.request_sha256 != fingerprint:
        raise IdempotencyConflict(f"Idempotency-Key {shown!r} was already used with a different request body "
                                  f"(job {row.job_id}); use a new key for a new request")
    return Submitted(row.job_id, row.response, replayed=True)


def list_jobs(db: Session, *, limit: int, cursor: str | None = None, status: str | None = None,
              concept: str | None = None, category: str | None = None) -> tuple[list[ErasureJob], bool]:
    """Newest first; `cursor` is the last id of the previous page. Returns (page, has_more)."""
    query = select(ErasureJob).order_by(ErasureJob.id.desc()).limit(limit + 1)
    if cursor:
        query = query.where(ErasureJob.id < cursor)
    if status:
        query = query.where(ErasureJob.status == status)
    if concept:
        query = query.where(func.lower(ErasureJob.concept) == concept.lower())
    if category:
        query = query.where(ErasureJob.category == category)
    rows = list(db.scalars(query))
    return rows[:limit], len(rows) > limit




def list_events(db: Session, job_id: str, *, limit: int,
                cursor: int | None = None) -> tuple[list[JobEvent], bool]:
    """Oldest first; `cursor` is the last event id of the previous page."""
    get_job(db, job_id)
    query = select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id).limit(limit + 1)
    if cursor is not None:
        query = query.where(JobEvent.id > cursor)
    rows = list(db.scalars(query))
    return rows[:limit], len(rows) > limit




def cancel(db: Session, job_id: str, actor: Actor) -> ErasureJob:
    """Queued: cancelled at once. Running: flagged, the worker stops at its next step. Finished: conflict."""
    if not finish(db, job_id, JobStatus.CANCELLED, "cancelled before it started", expected=[JobStatus.QUEUED],
                  actor=actor, action="erasure.cancel"):
        if not transition(db, job_id, [JobStatus.RUNNING], cancel_requested_at=utcnow()):
            job = get_job(db, job_id)
            raise JobStateConflict(f"job {job_id} is {job.status}; only queued or running jobs can be cancelled")
        add_event(db, job_id, EventKind.INFO, "cancel requested; stopping at the next step")
        record(db, actor, "erasure.cancel", job_id)
        db.commit()
    return fresh(db, job_id)


# What retry() accepts (a cancelled job stays cancelled: the moderator stopped it); the console offers Retry by it.
RETRYABLE = (JobStatus.FAILED,)


def retry(db: Session, job_id: str, actor: Actor) -> ErasureJob:
    """Put a failed job back in the queue; training resumes from its last checkpoint if one is left."""
    if not transition(db, job_id, RETRYABLE, status=JobStatus.QUEUED, error=None, finished_at=None,
                       enqueued_at=None, cancel_requested_at=None):
        job = get_job(db, job_id)
        raise JobStateConflict(f"job {job_id} is {job.status}; only failed jobs can be retried")
    add_event(db, job_id, EventKind.STATE, "queued again (retry)", {"status": "queued"})
    record(db, actor, "erasure.retry", job_id)
    db.commit()
    return fresh(db, job_id)

