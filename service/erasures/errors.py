"""What can go wrong with an erasure job, in the domain's terms (api/errors.py maps them to HTTP)."""

from __future__ import annotations

from service.core.errors import Conflict, Invalid, NotFound


class JobNotFound(NotFound):
    code = "job_not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no erasure job with id {job_id}", "id", "path")


class JobStateConflict(Conflict):
    """The job is in a state that does not allow the requested action."""

    code = "job_state_conflict"


class IdempotencyConflict(Invalid):
    """An Idempotency-Key was reused with a different request body."""

    code = "idempotency_key_reused"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, "Idempotency-Key", "header")


class InvalidJobRequest(Invalid):
    """The presets refused the request (the core's own validation)."""
