"""Domain errors: what went wrong in the service's own terms, never an HTTP status.

Each domain raises subclasses of these four kinds; the HTTP adapter (api/errors.py) maps a kind to
a status and answers problem+json with the error's `code` and the input it names (`field`, where:
`body`, `path`, `query` or `header`).
"""

from __future__ import annotations


class DomainError(Exception):
    code = "invalid_request"

    def __init__(self, detail: str, field: str | None = None, where: str = "body") -> None:
        super().__init__(detail)
        self.field, self.where = field, where


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    """The thing exists, but its state does not allow the action."""

    code = "conflict"


class Invalid(DomainError):
    """The request itself cannot be honoured (a limit, an unknown reference)."""

    code = "invalid_request"


class Unavailable(DomainError):
    """Something the action needs is not available now; retrying later may work."""

    code = "unavailable"


class Forbidden(DomainError):
    """The caller may not do this (a role's limit on a field, say)."""

    code = "forbidden"


class Exhausted(DomainError):
    """A quota or a queue is full: retrying after `retry_after_s` may work."""

    code = "quota_exceeded"
    retry_after_s = 60
