"""The deployments HTTP contract: a new version's body, and the version and active-version shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.fields import Reason
from service.deployments.contract import MAX_ERASURES, MAX_WEIGHT
from service.deployments.models import Deployment
from service.erasures.contract import ERASURE_ID_PATTERN

ErasureId = Annotated[str, Field(pattern=ERASURE_ID_PATTERN)]


class DeploymentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    erasure_ids: list[ErasureId] = Field(min_length=1, max_length=MAX_ERASURES)
    weights: list[Annotated[float, Field(gt=0, le=MAX_WEIGHT, allow_inf_nan=False)]] | None = Field(
        None, description="One per erasure; default 1/N each (Appendix F)")
    reason: Reason | None = None
    force: bool = Field(False, description="Admins only: deploy even if the deploy gate refuses (audited)")


class DeployRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    force: bool = Field(False, description="Admins only: deploy even if the deploy gate refuses (audited)")
    reason: Reason | None = Field(None, description="Kept with the approval request (ZERASE_DEPLOY_APPROVALS=1)")


class ChangeRequest(BaseModel):
    """The optional body of a retire or an activation: the version served then passes the deploy gate too."""

    model_config = ConfigDict(extra="forbid")

    force: bool = Field(False, description="Admins only: serve it even if the deploy gate refuses (audited)")
    reason: Reason | None = Field(None, description="Kept with the approval request (ZERASE_DEPLOY_APPROVALS=1)")


class DeploymentEntry(BaseModel):
    erasure_id: str
    concept: str
    category: str | None = None  # the request's; None on versions made before it was recorded
    weight: float
    sha256: str
    uri: str


class GuardEntry(BaseModel):
    """A takedown under the prompt guard: each generation process calibrates it on its model (the outcome is the
    erasure's `mitigation.guard`) and applies it if it passes its own check."""

    erasure_id: str
    concept: str
    category: str
    anchor: str | None = None


class DeploymentOut(BaseModel):
    version: int
    object: Literal["deployment"] = "deployment"
    entries: list[DeploymentEntry]
    created_by: str | None
    reason: str | None
    created_at: datetime
    active: bool
    evaluation_status: Literal["queued", "running", "evaluated", "failed"] | None = Field(
        None, description="The set judged as served (`GET /deployments/{v}/evaluation`); null: not needed (one "
                          "erasure at weight 1 is judged by its job's evaluation) or not asked for")
    pending_activation: dict[str, Any] | None = Field(
        None, description="An activation waiting for the evaluation: `kind` (deploy, retire, activate), `actor`, "
                          "`based_on` (the active version it was built on); the worker activates the version if "
                          "the gate passes it")
    guard: list[GuardEntry] = Field(
        default_factory=list, description="Takedowns served by the prompt guard until their erasure is deployed "
                                          "(POST /erasures with mitigate=immediate)")
    refusal: dict[str, Any] | None = Field(
        None, description="Why the waiting activation did not happen: `code` (deploy_gate, conflict, superseded), "
                          "`detail`, `gate` (the misses, each naming the concept that came back and its figure)")

    @classmethod
    def of(cls, deployment: Deployment, active_version: int | None) -> DeploymentOut:
        return cls(version=deployment.version, entries=[DeploymentEntry(**e) for e in deployment.entries],
                   created_by=deployment.created_by, reason=deployment.reason, created_at=deployment.created_at,
                   active=deployment.version == active_version,
                   evaluation_status=deployment.evaluation_status,  # type: ignore[arg-type]
                   pending_activation=deployment.pending_activation, refusal=deployment.refusal,
                   guard=[GuardEntry(**g) for g in deployment.guard or []])


class DeploymentEvaluation(BaseModel):
    version: int
    object: Literal["deployment_evaluation"] = "deployment_evaluation"
    status: Literal["queued", "running", "evaluated", "failed"]
    evaluation: dict[str, Any] | None = Field(
        description="`concepts`: per erasure, its concept's Acc_e before/after and the attacks under the combined "
                    "patch; `kept`: every concept none of them names, Acc_ir before/after, per concept, the worst; "
                    "`images`, `seconds`; `error` or `skipped` when it failed")
    gate: list[dict[str, Any]] = Field(description="The deploy gate's misses under the current policy ([]: passes)")


class DeploymentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DeploymentOut]


class ActiveOut(BaseModel):
    version: int = Field(description="0: the base model, no erasure applied")
    deployment: DeploymentOut | None
    activated_by: str | None
    activated_at: datetime | None
