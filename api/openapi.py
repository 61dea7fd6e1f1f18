"""The OpenAPI document as clients should read it: operation ids `<tag>-<name>` (`erasures-create`),
and every error response declared as `application/problem+json` with the Problem schema."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

PROBLEM = "application/problem+json"
_DESCRIPTIONS = {
    401: "No API key, or an unknown or revoked one",
    403: "The key's role may not do this",
    404: "Not found",
    409: "The current state does not allow this",
    422: "The request is invalid; `errors` names each field",
    429: "Too many requests; retry after `Retry-After`",
    503: "A dependency is unavailable; retry after `Retry-After`",
}


class FieldError(BaseModel):
    field: str = Field(description="The input named as the client sent it: `preservation[2]`, `Idempotency-Key`")
    pointer: str = Field(description="Where: `#/json/pointer` in the body, `query:name`, `path:name`, "
                                     "`header:Name`")
    detail: str
    type: str | None = None


class Problem(BaseModel):
    """RFC 9457 problem details, with a stable `code` and the offending fields."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str = Field(description="Stable, machine-readable: `job_not_found`, `invalid_request`, ...")
    errors: list[FieldError] | None = None


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route or router: these statuses answer problem+json (filled in by `install`)."""
    return {status: {"description": _DESCRIPTIONS.get(status, HTTPStatus(status).phrase)} for status in statuses}


def operation_id(route: APIRoute) -> str:
    return f"{route.tags[-1]}-{route.name}" if route.tags else route.name  # deploy: tagged erasures last


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _problem_responses(get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _problem_responses(schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (FieldError, Problem):
        components[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
    problem = {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                if status[0] in "45":
                    response["content"] = problem
    # FastAPI's own 422 shapes are never sent: every validation error is a Problem.
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema
