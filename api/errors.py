"""Every error as RFC 9457 `application/problem+json`, naming the offending field where there is one."""

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
from service.deployments import DeploymentError
from service.generation import InvalidGeneration, PatchUnavailable
from service.jobs import IdempotencyConflict, InvalidJobRequest, JobNotFound, JobStateConflict
from service.keys import ApiKeyError
from service.store import ArtifactIntegrityError

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"


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


async def _on_not_found(request: Request, exc: Exception) -> JSONResponse:
    return problem(404, f"no erasure job with id {exc}", code="job_not_found", errors=[
        {"field": "id", "pointer": "path:id", "detail": "not found"}])


async def _on_state(_: Request, exc: Exception) -> JSONResponse:
    return problem(409, str(exc), code="job_state_conflict")


async def _on_idempotency(_: Request, exc: Exception) -> JSONResponse:
    error = {"field": "Idempotency-Key", "pointer": "header:Idempotency-Key", "detail": "key reused"}
    return problem(422, str(exc), code="idempotency_key_reused", errors=[error])


async def _on_invalid(_: Request, exc: Exception) -> JSONResponse:
    return problem(422, str(exc), code="invalid_request")


async def _on_integrity(_: Request, exc: Exception) -> JSONResponse:
    log.error("artifact integrity check failed: %s", exc)
    return problem(500, f"the stored artifact failed its sha256 check and was not served: {exc}",
                   code="artifact_corrupt")


async def _on_field_error(_: Request, exc: Exception) -> JSONResponse:
    """Deployment and generation errors carry their status and the field they are about."""
    assert isinstance(exc, DeploymentError | InvalidGeneration)
    field = exc.field
    errors = [{"field": field, "pointer": f"#/{field}", "detail": str(exc)}] if field else None
    code = {404: "not_found", 409: "conflict"}.get(exc.status, "invalid_request")
    return problem(exc.status, str(exc), code=code, errors=errors)


async def _on_patch_unavailable(_: Request, exc: Exception) -> JSONResponse:
    # Fail closed: no image rather than one without the erasures that should be applied.
    log.error("safety patch unavailable: %s", exc)
    return problem(503, str(exc), code="safety_patch_unavailable", title="Safety patch unavailable",
                   headers={"Retry-After": "5"})


async def _on_auth(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AuthError)
    error = {"field": "Authorization", "pointer": "header:Authorization", "detail": str(exc)}
    if exc.status == 401:
        return problem(401, str(exc), code="unauthenticated", errors=[error],
                       headers={"WWW-Authenticate": 'Bearer realm="zerase"'})
    return problem(403, str(exc), code="forbidden", errors=[error])


async def _on_key(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiKeyError)
    errors = [{"field": "id", "pointer": "path:id", "detail": "not found"}] if exc.status == 404 else None
    return problem(exc.status, str(exc), code={404: "key_not_found"}.get(exc.status, "conflict"), errors=errors)


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
    app.add_exception_handler(JobNotFound, _on_not_found)
    app.add_exception_handler(JobStateConflict, _on_state)
    app.add_exception_handler(IdempotencyConflict, _on_idempotency)
    app.add_exception_handler(InvalidJobRequest, _on_invalid)
    app.add_exception_handler(ArtifactIntegrityError, _on_integrity)
    app.add_exception_handler(DeploymentError, _on_field_error)
    app.add_exception_handler(InvalidGeneration, _on_field_error)
    app.add_exception_handler(PatchUnavailable, _on_patch_unavailable)
    app.add_exception_handler(AuthError, _on_auth)
    app.add_exception_handler(DBAPIError, _on_database)
    app.add_exception_handler(PoolTimeout, _on_database)
    app.add_exception_handler(ApiKeyError, _on_key)
    app.add_exception_handler(Exception, _on_unexpected)
