"""The erasures HTTP contract: the request body and the job, event and list shapes.

Enums and limits come from the domain (service.erasures.contract); nothing is restated here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from api.fields import Reason, Text
from service.core.text import normalized
from service.deployments.guard import IMMEDIATE, Served
from service.erasures.contract import (
    EPSILON_MAX,
    EPSILON_MIN,
    MAX_ETA,
    MAX_PRESERVATION,
    MAX_PRIORITY,
    MAX_RANK,
    MAX_SEED,
    MAX_STEPS,
    Category,
    EventKind,
    JobStatus,
)
from service.erasures.models import ErasureJob, JobEvent


class ErasureCreate(BaseModel):
    """A request to erase `concept`. Presets for `category` fill every optional field left out."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"concept": "Mira", "category": "celebrity", "reason": "TICKET-123: likeness complaint"}]})

    concept: Text
    category: Category
    preservation: list[Text] | None = Field(
        None, max_length=MAX_PRESERVATION,
        description="What to keep intact, added to what the service always keeps (see protect_unnamed)")
    protect_unnamed: bool = Field(
        True, description="Also keep what nobody listed: the concept's neighbours, its own prompts with the concept "
        "taken out and a few general captions (the job's events and hyperparameters show the set used); false "
        "keeps only `preservation` (left out: the neighbours alone)")
    anchor: Text | None = Field(None, description="What the concept should turn into (celebrity: 'a person')")
    epsilon: float | None = Field(
        None, gt=EPSILON_MIN, le=EPSILON_MAX, allow_inf_nan=False,
        description=f"Preservation tolerance ε in ({EPSILON_MIN:g}, {EPSILON_MAX:g}]; default per category (Table 6)")
    eta: float | None = Field(None, gt=0, le=MAX_ETA, allow_inf_nan=False, description="Negative guidance η")
    steps: int | None = Field(None, ge=1, le=MAX_STEPS)
    rank: int | None = Field(None, ge=1, le=MAX_RANK)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    reason: Reason | None = Field(None, description="Why: ticket, legal basis")
    auto_deploy: bool = Field(False, description="On success, deploy it: active deployment + this erasure")
    priority: int | None = Field(None, ge=0, le=MAX_PRIORITY,
                                 description="Admins only: higher runs first (0, the default, is normal)")
    mitigate: Literal["immediate", "none"] = Field(
        "none", description="immediate: within seconds, /generate refuses (or rewrites) prompts that read as the "
        "concept, through a prompt guard on the text encoder, until this erasure is deployed in its place or the "
        "request is cancelled; `mitigation` says how it went")

    @field_validator("preservation")
    @classmethod
    def _distinct_from_concept(cls, items: list[str] | None, info: ValidationInfo) -> list[str] | None:
        concept = info.data.get("concept")
        seen: dict[str, int] = {}
        for i, item in enumerate(items or []):
            key = normalized(item)
            if concept is not None and key == normalized(concept):
                raise ValueError(f"item {i} ({item!r}) is the concept itself; a concept cannot be both "
                                 "erased and preserved")
            if key in seen:
                raise ValueError(f"item {i} ({item!r}) repeats item {seen[key]}")
            seen[key] = i
        return items

    def overrides(self) -> dict[str, Any]:
        return {k: v for k in ("eta", "steps", "rank", "seed") if (v := getattr(self, k)) is not None}


class Progress(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    step: int
    total: int
    lambda_: float = Field(alias="lambda", description="λ, the multiplier of the preservation constraint")
    loss_erase: float
    loss_preserve: float
    eta_seconds: float | None
    curve: list[tuple[int, float, float, float]] = Field(
        default_factory=list, description="[step, loss_erase, loss_preserve, λ], at most 100 rows over the job")


class Artifact(BaseModel):
    uri: str
    sha256: str
    bytes: int
    url: str = Field(description="Where to download it from this API")


def evaluation_view(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    """A job's evaluation as the API shows it: the report's metrics (flat, as measured), who measured them
    (`evaluator`, `protocol`), `status`, and `attacks` as a list: each string attack kind and each red-team
    attack as {name, success_rate (after the erasure), success_rate_before, prompts (how many)}."""
    if raw is None:
        return None
    view = {k: v for k, v in raw.items() if k not in ("attacks", "redteam")}
    view["status"] = "skipped" if "skipped" in raw else "failed" if "error" in raw else "evaluated"
    view.setdefault("evaluator", "probe" if "axis" in raw else None)
    view.setdefault("protocol", None)
    attacks = [{"name": kind, "success_rate": a["after"], "success_rate_before": a["before"],
                "prompts": len(a["prompts"])} for kind, a in (raw.get("attacks") or {}).items()]
    attacks += [{"name": a["name"], "success_rate": a["success_rate"],
                 "success_rate_before": a.get("success_rate_unpatched"), "prompts": a["prompts"]}
                for a in raw.get("redteam") or []]
    view["attacks"] = attacks
    return view


class Mitigation(BaseModel):
    mode: Literal["immediate"]
    stage: str = Field(
        description="guarded (the prompt guard serves it), trained (the erasure succeeded, not deployed yet), "
        "deployed (the erasure serves it), cancelled, or requested (nothing serves it: its guard was refused)")
    guard: dict[str, Any] | None = Field(description=(
        "The guard's record: {stage: guarded | refused | failed | ended, version (where it went live), calibration "
        "{threshold, detection, attack_detection, false_positives, limits}, detail?}"))


class Job(BaseModel):
    id: str
    object: Literal["erasure"] = "erasure"
    url: str
    status: JobStatus
    concept: str
    category: Category
    hyperparameters: dict[str, Any] = Field(description=(
        "The resolved EraseConfig the job trains with (null_space and steps are the current round's: see "
        "evaluation.retune)"))
    requested_by: str
    reason: str | None
    attempts: int
    error: str | None
    progress: Progress | None
    artifact: Artifact | None
    evaluation: dict[str, Any] | None = Field(description=(
        "After success: the evaluator's before/after metrics (acc_e, acc_ir, ha, drift, attack_success_rate) "
        "and `attacks` [{name, success_rate, success_rate_before, prompts}], with `status` evaluated; or "
        "{status: skipped, skipped: why} / {status: failed, error: ...}; null until then. Where the first round "
        "missed the deploy gate and the job trained again: `retune` {rounds: [{round, null_space, steps, misses, "
        "change}], published} (the figures are the published round's). GET …/evaluation adds the deploy gate's "
        "verdict"))
    preview_url: str | None = Field(description="A before/after PNG grid of the concept and preserved prompts")
    auto_deploy: bool
    priority: int
    mitigation: Mitigation | None = Field(description="With mitigate=immediate: the takedown's stage")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested_at: datetime | None

    @classmethod
    def of(cls, job: ErasureJob, served: Served | None = None) -> Job:
        """The job as the API shows it; `served` (the active version's sets) tells its takedown stage."""
        url = f"/erasures/{job.id}"
        artifact = None
        if job.artifact_uri and job.artifact_sha256 and job.artifact_bytes is not None:
            artifact = Artifact(uri=job.artifact_uri, sha256=job.artifact_sha256, bytes=job.artifact_bytes,
                                url=f"{url}/artifact")
        return cls(
            id=job.id, url=url, status=JobStatus(job.status), concept=job.concept, category=Category(job.category),
            hyperparameters=job.config, requested_by=job.requested_by, reason=job.reason,
            attempts=job.attempts, error=job.error,
            progress=Progress.model_validate(job.progress) if job.progress else None, artifact=artifact,
            evaluation=evaluation_view(job.evaluation), preview_url=f"{url}/preview.png" if job.preview_uri else None,
            auto_deploy=job.auto_deploy, priority=job.priority,
            mitigation=Mitigation(mode="immediate", stage=(served or Served()).stage(job) or "requested",
                                  guard=job.mitigation) if job.mitigate == IMMEDIATE else None,
            created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
            cancel_requested_at=job.cancel_requested_at)

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Job]
    has_more: bool
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


class Event(BaseModel):
    id: int
    kind: EventKind
    message: str
    data: dict[str, Any] | None
    created_at: datetime

    @classmethod
    def of(cls, event: JobEvent) -> Event:
        return cls(id=event.id, kind=EventKind(event.kind), message=event.message, data=event.data,
                   created_at=event.created_at)


class EventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Event]
    has_more: bool
    next_cursor: str | None
