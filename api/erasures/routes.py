"""/erasures: submit, inspect, list, cancel and retry erasure jobs, read their events and artifact."""

from __future__ import annotations

import base64
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, replace
from typing import IO, Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from api.auth import ActorDep, require
from api.deps import DispatcherDep, GeneratorDep, SessionDep, SessionsDep, SettingsDep, StoreDep
from api.erasures.schemas import ErasureCreate, Event, EventList, Job, JobList, evaluation_view
from api.errors import problem
from api.openapi import problems
from service.audit.service import Actor
from service.core.settings import Settings
from service.core.store import ArtifactStore
from service.core.text import PLAIN_PARAMETER
from service.deployments import guard as guards
from service.deployments.gate import GatePolicy, misses
from service.deployments.guard import IMMEDIATE, Served
from service.deployments.serving import GenerationService
from service.erasures import service as jobs
from service.erasures.contract import ERASURE_ID_PATTERN, EVENT_CURSOR_PATTERN, MAX_TEXT, Category, JobStatus
from service.erasures.errors import JobStateConflict
from service.erasures.models import ErasureJob
from service.erasures.quota import Quota
from service.keys.contract import Role
from worker.dispatch import Dispatcher, hand_over

log = logging.getLogger(__name__)

router = APIRouter(prefix="/erasures", tags=["erasures"], dependencies=[Depends(require(Role.MODERATOR))],
                   responses=problems(401, 403))

Limit = Annotated[int, Query(ge=1, le=100, description="Page size")]
JobId = Annotated[str, Path(pattern=ERASURE_ID_PATTERN, description="An erasure id, er_...")]
IdempotencyKey = Annotated[str | None, Header(
    min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",
    description="Repeat a request safely: the same key and body replay the first response")]


@router.post("", name="create", status_code=202, response_model=Job, responses=problems(422, 429))
def create_erasure(body: ErasureCreate, db: SessionDep, sessions: SessionsDep, dispatcher: DispatcherDep,
                   settings: SettingsDep, actor: ActorDep, generator: GeneratorDep,
                   idempotency_key: IdempotencyKey = None) -> JSONResponse:
    submitted = submit_erasure(body, db, sessions, dispatcher, settings, actor, idempotency_key, generator)
    headers = {"Location": f"/erasures/{submitted.job_id}"}
    if submitted.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(submitted.response, status_code=202, headers=headers)


def submit_erasure(body: ErasureCreate, db: Session, sessions: sessionmaker[Session], dispatcher: Dispatcher,
                   settings: Settings, actor: Actor, idempotency_key: str | None = None,
                   generator: GenerationService | None = None) -> jobs.Submitted:
    """Queue the job (or replay an earlier identical request), put it under the prompt guard when it asks for
    immediate mitigation, and hand it to the workers: what the API and the console's request form both do."""
    mitigate = IMMEDIATE if body.mitigate == IMMEDIATE else None
    spec = jobs.JobSpec(concept=body.concept, category=body.category, preservation=body.preservation,
                        anchor=body.anchor, epsilon=body.epsilon, overrides=body.overrides(),
                        reason=body.reason, requested_by=actor.name, auto_deploy=body.auto_deploy,
                        priority=body.priority or 0, protect_unnamed=body.protect_unnamed, mitigate=mitigate)
    submitted = jobs.submit(db, spec, settings.model_dir, lambda job: Job.of(job).body(), idempotency_key, actor,
                            quota=Quota.of(settings), idempotency_ttl_s=settings.idempotency_ttl_s,
                            training=settings.training_defaults)
    if submitted.replayed:
        return submitted
    if mitigate is not None:
        # Before training starts: the guard is the takedown's first seconds (training would share the CPUs).
        job = mitigate_now(db, jobs.get_job(db, submitted.job_id), generator, settings, actor)
        submitted = replace(submitted, response=Job.of(job, Served.now(db)).body())
    hand_over(dispatcher, sessions, submitted.job_id, spec.priority)
    return submitted


def mitigate_now(db: Session, job: ErasureJob, generator: GenerationService | None, settings: Settings,
                 actor: Actor) -> ErasureJob:
    """Serve the concept's prompt guard (a new version, activated); where this process serves the model,
    apply it at once, so the guard is calibrated (and its check known) before the response."""
    job = guards.guard(db, job, actor)
    if generator is not None and settings.api_routes != "control":
        try:
            generator.sync()
        except Exception:  # served or not, the version is active: every request applies it or fails closed
            log.exception("the guard of %s could not be applied at once", job.id)
        db.refresh(job)
    return job


@router.get("", name="list", response_model=JobList, responses=problems(422))
def list_erasures(db: SessionDep, limit: Limit = 20,
                  cursor: str | None = Query(None, pattern=ERASURE_ID_PATTERN),
                  status: JobStatus | None = None,
                  concept: str | None = Query(None, max_length=MAX_TEXT, pattern=PLAIN_PARAMETER),
                  category: Category | None = None) -> JobList:
    page, has_more = jobs.list_jobs(db, limit=limit, cursor=cursor, status=status, concept=concept,
                                    category=category)
    served = Served.now(db)
    return JobList(data=[Job.of(j, served) for j in page], has_more=has_more,
                   next_cursor=page[-1].id if has_more else None)


@router.get("/{job_id}", name="get", response_model=Job, responses=problems(404))
def get_erasure(job_id: JobId, db: SessionDep) -> Job:
    return Job.of(jobs.get_job(db, job_id), Served.now(db))


@router.post("/{job_id}/cancel", name="cancel", response_model=Job, responses={
    200: {"description": "Cancelled (it was queued)"},
    202: {"description": "Cancel requested: the running job stops at its next step"},
    **problems(404, 409)})
def cancel_erasure(job_id: JobId, db: SessionDep, actor: ActorDep) -> JSONResponse:
    job = jobs.cancel(db, job_id, actor)  # a cancelled takedown's guard ends with it (guard.on_job_finished)
    return JSONResponse(Job.of(job, Served.now(db)).body(),
                        status_code=200 if job.status == JobStatus.CANCELLED else 202)


@router.delete("/{job_id}/guard", name="end-guard", response_model=Job, responses=problems(404, 409))
def end_guard(job_id: JobId, db: SessionDep, actor: ActorDep) -> Job:
    """End the takedown's prompt guard now (a new deployment version without it, activated): for a failed erasure
    that will not be retried. Deploying the erasure, or cancelling it, ends the guard by itself."""
    jobs.get_job(db, job_id)
    guards.end_guard(db, job_id, actor)
    return Job.of(jobs.get_job(db, job_id), Served.now(db))


@router.post("/{job_id}/retry", name="retry", status_code=202, response_model=Job, responses=problems(404, 409))
def retry_erasure(job_id: JobId, db: SessionDep, sessions: SessionsDep, dispatcher: DispatcherDep,
                  actor: ActorDep) -> Job:
    job = jobs.retry(db, job_id, actor)
    hand_over(dispatcher, sessions, job_id, job.priority)
    return Job.of(job, Served.now(db))


@router.get("/{job_id}/evaluation", name="get-evaluation", responses=problems(404, 409))
def get_evaluation(job_id: JobId, db: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """The job's evaluation (as embedded in the job) and the deploy gate's verdict on it under the current
    policy: {"passed", "misses": [{metric, value, limit}]} (null when the gate is off). 409 until evaluated."""
    job = jobs.get_job(db, job_id)
    view = evaluation_with_verdict(job, settings)
    if view is None:
        raise JobStateConflict(f"erasure {job_id} is {job.status}: it has no evaluation yet", "job_id", "path")
    return view


def evaluation_with_verdict(job: ErasureJob, settings: Settings) -> dict[str, Any] | None:
    """The evaluation view plus the gate's verdict under the current policy (None until evaluated)."""
    view = evaluation_view(job.evaluation)
    if view is None:
        return None
    policy = GatePolicy.of(settings)
    view["gate"] = None
    if policy is not None:
        found = misses(policy, job.id, job.evaluation)
        view["gate"] = {"passed": not found, "misses": [m.to_dict() for m in found], "policy": asdict(policy)}
    return view


@router.get("/{job_id}/events", name="list-events", response_model=EventList, responses=problems(404, 422))
def list_events(job_id: JobId, db: SessionDep, limit: Limit = 50,
                cursor: str | None = Query(None, pattern=EVENT_CURSOR_PATTERN)) -> EventList:
    page, has_more = jobs.list_events(db, job_id, limit=limit, cursor=int(cursor) if cursor else None)
    return EventList(data=[Event.of(e) for e in page], has_more=has_more,
                     next_cursor=str(page[-1].id) if has_more else None)


@router.get("/{job_id}/artifact", name="get-artifact", response_class=Response, responses={
    200: {"content": {"application/octet-stream": {}}, "description": "The LoRA (.safetensors)"},
    307: {"description": "Redirect to a presigned URL (S3 store with ZERASE_ARTIFACT_REDIRECT)"},
    **problems(404, 409)})
def get_artifact(job_id: JobId, db: SessionDep, store: StoreDep, settings: SettingsDep) -> Response:
    job = jobs.get_job(db, job_id)
    if not (job.artifact_uri and job.artifact_sha256):
        return problem(409, f"job {job_id} is {job.status}; its artifact exists once it has succeeded",
                       code="artifact_not_ready")
    # RFC 9530: the client can check what it receives, also when it downloads from S3 directly.
    digest = base64.b64encode(bytes.fromhex(job.artifact_sha256)).decode()
    headers = {"Repr-Digest": f"sha-256=:{digest}:", "ETag": f'"{job.artifact_sha256}"'}
    if settings.artifact_redirect and (url := store.presigned_url(job.artifact_uri)):
        return RedirectResponse(url, status_code=307, headers=headers)
    headers["Content-Disposition"] = f'attachment; filename="{job_id}.safetensors"'
    return _verified(store, job.artifact_uri, job.artifact_sha256, "application/octet-stream", headers)


@router.get("/{job_id}/preview.png", name="get-preview", response_class=Response, responses={
    200: {"content": {"image/png": {}}, "description": "Before (top row) and after (bottom row): the concept's "
          "prompt, then preserved prompts, at one seed"},
    **problems(404, 409)})
def get_preview(job_id: JobId, db: SessionDep, store: StoreDep) -> Response:
    job = jobs.get_job(db, job_id)
    if not (job.preview_uri and job.preview_sha256):
        when = "is made when it succeeds" if job.status != JobStatus.SUCCEEDED else "was not made (see its events)"
        return problem(409, f"job {job_id} is {job.status}; its preview {when}", code="preview_not_ready")
    return _verified(store, job.preview_uri, job.preview_sha256, "image/png", {"ETag": f'"{job.preview_sha256}"'})


def _verified(store: ArtifactStore, uri: str, sha256: str, media_type: str, headers: dict[str, str]) -> Response:
    """The whole object is hashed before the first byte goes out: a corrupt object is never served."""
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=64 << 20)  # noqa: SIM115 (closed by _stream)
    try:
        store.fetch(uri, sha256, spool)
    except BaseException:
        spool.close()
        raise
    headers["Content-Length"] = str(spool.tell())
    spool.seek(0)
    return StreamingResponse(_stream(spool), media_type=media_type, headers=headers)


def _stream(spool: IO[bytes]) -> Iterator[bytes]:
    with spool:
        while chunk := spool.read(1 << 20):
            yield chunk
