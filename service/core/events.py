"""In-process domain events: a service publishes what happened, after its transaction committed;
what follows (auto-deploy, webhooks) subscribes here instead of being called from the code that made
it happen.

A handler's failure is logged and never undoes the event (the job has finished either way).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.orm import Session

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobFinished:
    """An erasure job reached a terminal state (succeeded, failed or cancelled)."""

    job_id: str
    status: str
    concept: str
    requested_by: str
    auto_deploy: bool
    database_url: str  # where the job lives: a process may serve several databases (tests do)


@dataclass(frozen=True)
class DeploymentActivated:
    """Generation serves `version` from now on (0: the base model)."""

    version: int
    previous_version: int
    activated_by: str
    database_url: str


@dataclass(frozen=True)
class ApprovalRequested:
    """A deploy or an activation waits for a second person (ZERASE_DEPLOY_APPROVALS=1)."""

    approval_id: str
    action: str  # "deploy", "retire" or "activate"
    target: str  # the erasure id or "deployment:<version>"
    requested_by: str
    database_url: str


E = TypeVar("E")
_handlers: defaultdict[type, list[Callable[[Any], None]]] = defaultdict(list)


def subscribe(event_type: type[E], handler: Callable[[E], None]) -> None:
    """Call `handler` for every event of `event_type` from now on (once, however often it subscribes)."""
    if handler not in _handlers[event_type]:
        _handlers[event_type].append(handler)


def publish(event: object) -> None:
    for handler in list(_handlers[type(event)]):
        try:
            handler(event)
        except Exception:
            log.exception("handler %s of %s failed", getattr(handler, "__name__", handler), type(event).__name__)


def database_url(db: Session) -> str:
    """The URL of the session's database, password included, for an event's handlers to connect with."""
    return db.get_bind().engine.url.render_as_string(hide_password=False)
