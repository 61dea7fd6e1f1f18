"""Every error as RFC 9457 `application/problem+json`, naming the offending field where there is one.

Service code raises domain errors (service.core.errors) that know nothing of HTTP; this is where
their kind becomes a status.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from api.auth import AuthError
from api.openapi import PROBLEM
from service.core.errors import Conflict, DomainError, Exhausted, Forbidden, Invalid, NotFound, Unavailable
from service.core.store import ArtifactIntegrityError, ArtifactMissing

log = logging.getLogger(__name__)
STATUS: dict[type[DomainError], int] = {NotFound: 404, Conflict: 409, Invalid: 422, Forbidden: 403,
                                        Exhausted: 429, Unavailable: 503, DomainError: 422}


def problem(status: int, detail: str, *, code: str, errors: list[dict[str, Any]] | None = None,
            headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status,
                            "detail": detail, "code": code, **extra}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def field_name(loc: Sequence[str | int]) -> tuple[str, str]:
    """('body', 'preservation', 2) -> ('preservation[2]', '#/preservation/2'); query/header: named as sent."""
    where, *path = loc if loc and loc[0] in ("body", "query", "path", "header") else ("body", *loc)
    name = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(path))
    if where == "body":
        return name or "body", "#/" + "/".join(str(p) for p in path)
    if where == "header":  # FastAPI reports "idempotency-key"; clients know it as "Idempotency-Key"
        name = "-".join(part.capitalize() for part in name.replace("_", "-").split("-"))
    return name, f"{where}:{name}"


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = list(err.get("loc", ()))
        if err.get("type") == "json_invalid":  # loc is ("body", <character offset>)
            message = f"not valid JSON (at character {loc[-1]})"
            loc = ["body"]
        elif err.get("type") == "extra_forbidden":
            message = "unknown field"
        else:
            message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        field, pointer = field_name(loc)
        out.append({"field": field, "pointer": pointer, "detail": message, "type": err.get("type")})
    return out


async def _on_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _validation_errors(exc)
    detail = "; ".join(f"{e['field']}: {e['detail']}" for e in errors)
    return problem(422, detail, code="invalid_request", errors=errors)


async def _on_http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    errors = None
    if exc.status_code == 400:  # the body could not be parsed (not JSON, bad UTF-8, too deep)
        errors = [{"field": "body", "pointer": "#/", "detail": str(exc.detail)}]
    return problem(exc.status_code, str(exc.detail), code=HTTPStatus(exc.status_code).name.lower(), errors=errors,
                   headers=getattr(exc, "headers", None))


async def _on_domain(_: Request, exc: Exception) -> JSONResponse:
    """A domain error: its kind gives the status, its `code` and `field` go to the client."""
    assert isinstance(exc, DomainError)
    status = next(code for kind, code in STATUS.items() if isinstance(exc, kind))
    errors = None
    if exc.field:
        pointer = f"#/{exc.field}" if exc.where == "body" else f"{exc.where}:{exc.field}"
        errors = [{"field": exc.field, "pointer": pointer, "detail": str(exc)}]
    if status == 503:  # fail closed: nothing was done; the client may retry
        log.error("%s: %s", exc.code, exc)
        return problem(status, str(exc), code=exc.code, errors=errors, headers={"Retry-After": "5"},
                       title=exc.code.replace("_", " ").capitalize())
    if isinstance(exc, Exhausted):
        return problem(status, str(exc), code=exc.code, errors=errors, headers={"Retry-After": str(exc.retry_after_s)})
    return problem(status, str(exc), code=exc.code, errors=errors, **getattr(exc, "extra", {}))


async def _on_integrity(_: Request, exc: Exception) -> JSONResponse:
    log.error("artifact integrity check failed: %s", exc)  # the object's location stays in the log
    return problem(500, "the stored object failed its sha256 check and was not served; see the server log",
                   code="artifact_corrupt")


async def _on_missing(_: Request, exc: Exception) -> JSONResponse:
    log.error("artifact missing from the store: %s", exc)
    return problem(503, "the stored object is missing from the artifact store; see the server log",
                   code="artifact_missing", headers={"Retry-After": "30"})


async def _on_auth(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AuthError)
    error = {"field": "Authorization", "pointer": "header:Authorization", "detail": str(exc)}
    if exc.status == 401:
        return problem(401, str(exc), code="unauthenticated", errors=[error],
                       headers={"WWW-Authenticate": 'Bearer realm="zerase"'})
    return problem(403, str(exc), code="forbidden", errors=[error])


async def _on_database(_: Request, exc: Exception) -> JSONResponse:
    # Down, restarting or unreachable: nothing was changed, the client may retry. pool_pre_ping makes
    # the next request after recovery use fresh connections, so no restart is needed.
    if isinstance(exc, DBAPIError) and not (isinstance(exc, OperationalError) or exc.connection_invalidated):
        return await _on_unexpected(_, exc)  # a query error is a bug, not an outage
    log.error("database unavailable: %s", exc)
    return problem(503, "the database is unavailable; nothing was changed, retry shortly",
                   code="database_unavailable", headers={"Retry-After": "5"})


async def _on_unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return problem(500, "internal error; see the server log", code="internal_error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(HTTPException, _on_http)
    app.add_exception_handler(DomainError, _on_domain)
    app.add_exception_handler(ArtifactIntegrityError, _on_integrity)
    app.add_exception_handler(ArtifactMissing, _on_missing)
    app.add_exception_handler(AuthError, _on_auth)
    app.add_exception_handler(DBAPIError, _on_database)
    app.add_exception_handler(PoolTimeout, _on_database)
    app.add_exception_handler(Exception, _on_unexpected)
