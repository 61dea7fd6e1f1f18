"""The HTTP contract: request bodies with their limits, and the shapes of responses."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from service.models import ApiKey, AuditEvent, Deployment, ErasureJob, JobEvent

Category = Literal["nudity", "violence", "artistic_style", "entity", "abstraction", "celebrity", "custom"]
Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]

MAX_TEXT = 200  # concept, anchor, each preservation item (the concept column is 200 wide)
MAX_REASON = 2000
MAX_PRESERVATION = 64
# Bidirectional overrides and isolates can make a logged concept read differently from what it is.
_BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def clean_text(value: str, *, multiline: bool = False) -> str:
    """Strip surrounding whitespace; refuse empty text and control characters."""
    for ch in value:
        if (unicodedata.category(ch) in ("Cc", "Cs") and not (multiline and ch in "\n\t")) or ch in _BIDI:
            raise ValueError(f"must not contain control characters (found U+{ord(ch):04X})")
    value = value.strip()
    if not value:
        raise ValueError("must not be empty or only whitespace")
    return value


def _normalized(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


Text = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(clean_text)]
Reason = Annotated[str, Field(max_length=MAX_REASON), AfterValidator(lambda v: clean_text(v, multiline=True))]


class ErasureCreate(BaseModel):
    """A request to erase `concept`. Presets for `category` fill every optional field left out."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"concept": "Mira", "category": "celebrity", "reason": "TICKET-123: likeness complaint"}]})

    concept: Text
    category: Category
    preservation: list[Text] | None = Field(
        None, max_length=MAX_PRESERVATION, description="What to keep intact; default per category")
    anchor: Text | None = Field(None, description="What the concept should turn into (celebrity: 'a person')")
    epsilon: float | None = Field(
        None, gt=0, le=1, allow_inf_nan=False,
        description="Preservation tolerance ε in (0, 1]; default per category (Table 6)")
    eta: float | None = Field(None, gt=0, le=20, allow_inf_nan=False, description="Negative guidance η")
    steps: int | None = Field(None, ge=1, le=5000)
    rank: int | None = Field(None, ge=1, le=256)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    reason: Reason | None = Field(None, description="Why: ticket, legal basis")
    auto_deploy: bool = Field(False, description="On success, deploy it: active deployment + this erasure")

    @field_validator("preservation")
    @classmethod
    def _distinct_from_concept(cls, items: list[str] | None, info: ValidationInfo) -> list[str] | None:
        concept = info.data.get("concept")
        seen: dict[str, int] = {}
        for i, item in enumerate(items or []):
            key = _normalized(item)
            if concept is not None and key == _normalized(concept):
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


class Artifact(BaseModel):
    uri: str
    sha256: str
    bytes: int
    url: str = Field(description="Where to download it from this API")


class Job(BaseModel):
    id: str
    object: Literal["erasure"] = "erasure"
    url: str
    status: Status
    concept: str
    category: Category
    hyperparameters: dict[str, Any] = Field(description="The resolved EraseConfig the job trains with")
    requested_by: str
    reason: str | None
    attempts: int
    error: str | None
    progress: Progress | None
    artifact: Artifact | None
    evaluation: dict[str, Any] | None = Field(description=(
        "After success: the probe's before/after metrics (acc_e, acc_ir, ha, drift, attack_success_rate), "
        "or {skipped: why} for a model without a probe, or {error: ...}; null until then"))
    preview_url: str | None = Field(description="A before/after PNG grid of the concept and preserved prompts")
    auto_deploy: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested_at: datetime | None

    @classmethod
    def of(cls, job: ErasureJob) -> Job:
        url = f"/erasures/{job.id}"
        artifact = None
        if job.artifact_uri and job.artifact_sha256 and job.artifact_bytes is not None:
            artifact = Artifact(uri=job.artifact_uri, sha256=job.artifact_sha256, bytes=job.artifact_bytes,
                                url=f"{url}/artifact")
        return cls(
            id=job.id, url=url, status=job.status, concept=job.concept, category=job.category,  # type: ignore[arg-type]
            hyperparameters=job.config, requested_by=job.requested_by, reason=job.reason,
            attempts=job.attempts, error=job.error,
            progress=Progress.model_validate(job.progress) if job.progress else None, artifact=artifact,
            evaluation=job.evaluation, preview_url=f"{url}/preview.png" if job.preview_uri else None,
            auto_deploy=job.auto_deploy,
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
    kind: Literal["state", "metrics", "error", "info"]
    message: str
    data: dict[str, Any] | None
    created_at: datetime

    @classmethod
    def of(cls, event: JobEvent) -> Event:
        return cls(id=event.id, kind=event.kind, message=event.message, data=event.data,  # type: ignore[arg-type]
                   created_at=event.created_at)


class EventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Event]
    has_more: bool
    next_cursor: str | None


ErasureId = Annotated[str, Field(pattern=r"^er_[0-9a-f]{32}$")]


class DeploymentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    erasure_ids: list[ErasureId] = Field(min_length=1, max_length=64)
    weights: list[Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)]] | None = Field(
        None, description="One per erasure; default 1/N each (Appendix F)")
    reason: Reason | None = None


class DeploymentEntry(BaseModel):
    erasure_id: str
    concept: str
    weight: float
    sha256: str
    uri: str


class DeploymentOut(BaseModel):
    version: int
    object: Literal["deployment"] = "deployment"
    entries: list[DeploymentEntry]
    created_by: str | None
    reason: str | None
    created_at: datetime
    active: bool

    @classmethod
    def of(cls, deployment: Deployment, active_version: int | None) -> DeploymentOut:
        return cls(version=deployment.version, entries=[DeploymentEntry(**e) for e in deployment.entries],
                   created_by=deployment.created_by, reason=deployment.reason, created_at=deployment.created_at,
                   active=deployment.version == active_version)


class DeploymentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DeploymentOut]


class ActiveOut(BaseModel):
    version: int = Field(description="0: the base model, no erasure applied")
    deployment: DeploymentOut | None
    activated_by: str | None
    activated_at: datetime | None


Prompt = Annotated[str, Field(max_length=20_000), AfterValidator(lambda v: clean_text(v, multiline=True))]


class GenerateRequest(BaseModel):
    """Defaults come from the model (the bundled tiny model: 32x32, 8 steps, guidance 1.0)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"prompt": "a red circle",
                                                                               "seed": 7}]})

    prompt: Prompt = Field(description="At most 512 tokens of the model's tokenizer")
    negative_prompt: Prompt | None = None
    seed: int = Field(0, ge=0, le=2**32 - 1)
    steps: int | None = Field(None, ge=1, le=50)
    width: int | None = Field(None, ge=16, le=1024, description="A multiple of 16")
    height: int | None = Field(None, ge=16, le=1024, description="A multiple of 16")
    guidance_scale: float | None = Field(None, ge=0, le=20, allow_inf_nan=False)


class GenerateResult(BaseModel):
    image_base64: str = Field(description="PNG")
    media_type: Literal["image/png"] = "image/png"
    seed: int
    width: int
    height: int
    steps: int
    guidance_scale: float
    patch_version: int = Field(description="The safety patch deployment applied; 0: the base model")
    erasure_ids: list[str]


RoleName = Literal["admin", "moderator", "generator"]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "trust-and-safety", "role": "moderator"}]})

    name: Text = Field(description="Who holds the key; recorded as the actor of every action")
    role: RoleName


class KeyOut(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    name: str
    role: RoleName
    prefix: str = Field(description="The secret's first characters, to recognise it by")
    created_by: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyOut:
        return cls(id=key.id, name=key.name, role=key.role, prefix=key.prefix,  # type: ignore[arg-type]
                   created_by=key.created_by, created_at=key.created_at, last_used_at=key.last_used_at,
                   revoked_at=key.revoked_at)


class KeyCreated(KeyOut):
    secret: str = Field(description="The key itself: shown this once, stored only as its sha256")


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyOut]


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    key_id: str | None
    action: str
    target: str | None
    data: dict[str, Any] | None

    @classmethod
    def of(cls, event: AuditEvent) -> AuditOut:
        return cls(id=event.id, at=event.at, actor=event.actor, key_id=event.key_id, action=event.action,
                   target=event.target, data=event.data)


class AuditList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AuditOut]
    has_more: bool
    next_cursor: str | None
