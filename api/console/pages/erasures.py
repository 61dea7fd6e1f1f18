"""The queue, the takedown request form and each erasure's page (live progress, curves, evaluation, grid,
artifact, and its Cancel / Retry / Deploy actions)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import ValidationError

from api.console import actions
from api.console import evaluation as explain
from api.console.render import render
from api.console.session import PREFIX, FormOf, Page, User
from api.deps import DispatcherDep, SessionsDep, SettingsDep, StoreDep, get_generator
from api.erasures import routes as api_erasures
from api.erasures.schemas import ErasureCreate, Job
from service.core.errors import DomainError
from service.core.settings import Settings
from service.deployments import guard as guards
from service.deployments.gate import GatePolicy
from service.deployments.guard import Served
from service.erasures import service as jobs
from service.erasures.contract import ERASURE_ID_PATTERN, FINISHED, Category
from service.erasures.models import ErasureJob
from service.keys.contract import Role
from zerase.train.presets import DESCRIPTIONS

router = APIRouter()
Moderator = Annotated[User, Depends(Page(Role.MODERATOR))]
ModeratorForm = Annotated[User, Depends(FormOf(Role.MODERATOR))]
JobId = Annotated[str, Path(pattern=ERASURE_ID_PATTERN)]
ADVANCED = ("epsilon", "eta", "steps")


@router.get("/erasures", name="console-queue")
def queue(request: Request, user: Moderator, settings: SettingsDep,
          cursor: Annotated[str | None, Query(pattern=ERASURE_ID_PATTERN)] = None) -> Response:
    page, has_more = jobs.list_jobs(user.db, limit=50, cursor=cursor)
    return render(request, "queue.html", user, **_rows(page, settings), next_cursor=page[-1].id if has_more else None)


@router.get("/erasures/rows", name="console-queue-rows")
def queue_rows(request: Request, user: Moderator, settings: SettingsDep,
               cursor: Annotated[str | None, Query(pattern=ERASURE_ID_PATTERN)] = None) -> Response:
    """The queue's table body alone: what the page's script swaps in every few seconds."""
    page, _ = jobs.list_jobs(user.db, limit=50, cursor=cursor)
    return render(request, "queue_rows.html", user, **_rows(page, settings))


def _rows(page: list[ErasureJob], settings: Settings) -> dict[str, Any]:
    policy = GatePolicy.of(settings)
    return {"jobs": [Job.of(j) for j in page], "deployability": {j.id: explain.deployability(j, policy) for j in page}}


@router.get("/erasures/new", name="console-request")
def request_form(request: Request, user: Moderator) -> Response:
    return _form(request, user, {"category": Category.CUSTOM.value}, {})


@router.get("/erasures/preset", name="console-preset")
def preset(user: Moderator, settings: SettingsDep, category: Category,
           concept: Annotated[str, Query(max_length=200)] = "") -> JSONResponse:
    """What the category's preset fills in for this concept on the served model (preservation, ε, anchor)."""
    spec = jobs.JobSpec(concept=concept.strip() or "concept", category=category, preservation=None, anchor=None,
                        epsilon=None, overrides={}, reason=None, requested_by=user.session.actor.name)
    try:
        config = jobs.resolve_config(spec, settings.model_dir, settings.training_defaults)
    except DomainError as exc:
        return JSONResponse({"error": str(exc)}, status_code=422)
    return JSONResponse({"preservation": config["preservation"], "epsilon": config["epsilon"],
                         "anchor": config["anchor"], "description": DESCRIPTIONS[category]})


@router.post("/erasures/new", name="console-submit")
def submit(request: Request, user: ModeratorForm, sessions: SessionsDep, dispatcher: DispatcherDep,
           settings: SettingsDep, concept: Annotated[str, Form()] = "", category: Annotated[str, Form()] = "",
           preservation: Annotated[str, Form()] = "", preservation_preset: Annotated[str, Form()] = "",
           only_listed: Annotated[str, Form()] = "", reason: Annotated[str, Form()] = "",
           epsilon: Annotated[str, Form()] = "", eta: Annotated[str, Form()] = "",
           steps: Annotated[str, Form()] = "", mitigate: Annotated[str, Form()] = "") -> Response:
    values = {"concept": concept, "category": category, "preservation": preservation, "reason": reason,
              "preservation_preset": preservation_preset, "only_listed": "1" if only_listed else "",
              "epsilon": epsilon, "eta": eta, "steps": steps, "mitigate": "1" if mitigate else ""}
    body: dict[str, Any] = {"concept": concept, "category": category, "reason": reason or None,
                            "mitigate": "immediate" if mitigate else "none"}
    # The preset's own list, left as shown, is the preset: the job resolves it exactly as the API would.
    if (lines := _lines(preservation)) != _lines(preservation_preset) or only_listed:
        body["preservation"] = lines
    if only_listed:
        body["protect_unnamed"] = False
    body.update({name: text.strip() for name, text in (("epsilon", epsilon), ("eta", eta), ("steps", steps))
                 if text.strip()})
    try:
        parsed = ErasureCreate.model_validate(body)
        submitted = api_erasures.submit_erasure(parsed, user.db, sessions, dispatcher, settings, user.session.actor,
                                                generator=get_generator(request))
    except ValidationError as exc:
        return _form(request, user, values, {_field(e["loc"]): e["msg"] for e in reversed(exc.errors())}, 422)
    except DomainError as exc:
        return _form(request, user, values, {_field((exc.field or "concept",)): str(exc)}, 422)
    actions.flash(user, f"Takedown of {concept.strip()!r} requested: {submitted.job_id}")
    return RedirectResponse(f"{PREFIX}/erasures/{submitted.job_id}", status_code=303)


@router.get("/erasures/{job_id}", name="console-erasure")
def erasure(request: Request, user: Moderator, settings: SettingsDep, job_id: JobId) -> Response:
    return render(request, "erasure.html", user, **_detail(user, settings, job_id))


@router.get("/erasures/{job_id}/live", name="console-erasure-live")
def erasure_live(request: Request, user: Moderator, settings: SettingsDep, job_id: JobId) -> Response:
    """The erasure page's changing part alone (status, progress, curves, evaluation, grid, actions)."""
    return render(request, "erasure_live.html", user, **_detail(user, settings, job_id))


@router.get("/erasures/{job_id}/artifact", name="console-artifact")
def artifact(user: Moderator, store: StoreDep, settings: SettingsDep, job_id: JobId) -> Response:
    return api_erasures.get_artifact(job_id, user.db, store, settings)


@router.get("/erasures/{job_id}/preview.png", name="console-preview")
def preview(user: Moderator, store: StoreDep, job_id: JobId) -> Response:
    return api_erasures.get_preview(job_id, user.db, store)


@router.post("/erasures/{job_id}/cancel", name="console-cancel")
def cancel(user: ModeratorForm, job_id: JobId) -> Response:
    with actions.reported(user, "Cancel"):
        job = jobs.cancel(user.db, job_id, user.session.actor)
        actions.flash(user, f"Cancel of {job_id}: {job.status}")
    return actions.back(f"/erasures/{job_id}")


@router.post("/erasures/{job_id}/retry", name="console-retry")
def retry(user: ModeratorForm, sessions: SessionsDep, dispatcher: DispatcherDep, job_id: JobId) -> Response:
    from worker.dispatch import hand_over

    with actions.reported(user, "Retry"):
        job = jobs.retry(user.db, job_id, user.session.actor)
        hand_over(dispatcher, sessions, job_id, job.priority)
        actions.flash(user, f"{job_id} is queued again")
    return actions.back(f"/erasures/{job_id}")


@router.post("/erasures/{job_id}/guard/end", name="console-end-guard")
def end_guard(user: ModeratorForm, job_id: JobId) -> Response:
    with actions.reported(user, "End guard"):
        version = guards.end_guard(user.db, job_id, user.session.actor)
        actions.flash(user, f"Guard of {job_id} ended: version {version} serves without it")
    return actions.back(f"/erasures/{job_id}")


@router.post("/erasures/{job_id}/deploy", name="console-deploy")
def deploy(user: ModeratorForm, settings: SettingsDep, job_id: JobId,
           force: Annotated[bool, Form()] = False) -> Response:
    with actions.reported(user, "Deploy"):
        actions.flash(user, actions.deploy(user, settings, job_id, force))
    return actions.back(f"/erasures/{job_id}")


def _detail(user: User, settings: Settings, job_id: str) -> dict[str, Any]:
    job = jobs.get_job(user.db, job_id)
    view = Job.of(job, Served.now(user.db))
    curve = view.progress.curve if view.progress else []
    evaluation = api_erasures.evaluation_with_verdict(job, settings)
    policy = GatePolicy.of(settings)
    explained = None if evaluation is None else {
        "metrics": explain.metric_rows(evaluation), "misses": [explain.miss_text(m) for m in
                                                               (evaluation["gate"] or {}).get("misses", [])],
        "attacks": explain.attack_rows(job.evaluation or {}, evaluation["attacks"], policy),
        "kept": explain.kept_rows(job.evaluation or {}), "kept_images": (job.evaluation or {}).get("kept_images"),
        "rounds": explain.round_rows(job.evaluation or {}),
        "strength": (job.evaluation or {}).get("served_strength"),
        "policy": explain.policy_text(policy) if policy else None}
    return {"job": view, "finished": job.status in FINISHED, "curve": curve, "evaluation": evaluation,
            "explained": explained, "deployability": explain.deployability(job, policy),
            "retryable": job.status in jobs.RETRYABLE, "deployed": actions.is_deployed(user, job_id),
            "approvals": settings.deploy_approvals, "events": jobs.list_events(user.db, job_id, limit=20)[0]}


def _form(request: Request, user: User, values: dict[str, str], errors: dict[str, str], status: int = 200) -> Response:
    return render(request, "request.html", user, status_code=status, values=values, errors=errors,
                  categories=[(c.value, DESCRIPTIONS[c.value]) for c in Category], advanced=ADVANCED,
                  open_advanced=any(values.get(n) for n in ADVANCED))


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    """A field of the form from an error location ("preservation[2]" and ("preservation", 2) alike)."""
    head = str(loc[0]) if loc else "concept"
    return head.split("[", 1)[0].split(".", 1)[0]
