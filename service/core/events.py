"""In-process domain events: a service publishes what happened, after its transaction committed;
what follows (auto-deploy, later webhooks and notifications) subscribes here instead of being
called from the code that made it happen.

A handler's failure is logged and never undoes the event (the job has finished either way).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

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


Handler = Callable[[JobFinished], None]
_handlers: list[Handler] = []


def subscribe(handler: Handler) -> None:
    """Call `handler` for every event from now on (once, however often it subscribes)."""
    if handler not in _handlers:
        _handlers.append(handler)


def publish(event: JobFinished) -> None:
    for handler in list(_handlers):
        try:
            handler(event)
        except Exception:
            log.exception("handler %s of %s failed", getattr(handler, "__name__", handler), type(event).__name__)
