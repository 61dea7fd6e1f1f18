"""The moderation console: server-rendered pages at /console over the same services as the API.

`install(app)` mounts it (with the control routes): its pages, its packaged assets, and error pages in
place of problem+json for the browser. Sign-in, the role checks and CSRF are in `session`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from api.console.pages import admin, approvals, deployments, erasures, playground, signin, webhooks
from api.console.render import HERE, render
from api.console.session import PREFIX, CsrfRejected, NotAllowed, SignInRequired, login_url
from service.core.errors import DomainError
from service.core.text import PLAIN_PARAMETER

router = APIRouter(prefix=PREFIX, include_in_schema=False)
for pages in (signin, erasures, deployments, approvals, playground, admin, webhooks):
    router.include_router(pages.router)

Handler = Callable[[Request, Exception], Awaitable[Response]]


def install(app: FastAPI) -> None:
    """Mount the console; call after api.errors.install (its handlers still answer every other path)."""
    app.include_router(router)
    app.mount(PREFIX + "/static", StaticFiles(directory=HERE / "static"), name="console-static")
    app.add_exception_handler(SignInRequired, _sign_in)
    app.add_exception_handler(NotAllowed, _page_error(403, "Not allowed"))
    app.add_exception_handler(CsrfRejected, _page_error(403, "Form refused"))
    for kind, status, heading in ((DomainError, None, "Refused"), (RequestValidationError, 422, "Bad request"),
                                  (HTTPException, None, "Not found")):
        api_handler: Handler = app.exception_handlers[kind]  # type: ignore[assignment]  # api.errors: all async
        app.add_exception_handler(kind, _in_console(api_handler, status, heading))


async def _sign_in(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)
    return RedirectResponse(login_url(exc.next_path), status_code=303)


def _page_error(status: int, heading: str) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        return render(request, "error.html", None, status_code=status, heading=heading, message=str(exc))

    return handle


def _in_console(api_handler: Handler, status: int | None, heading: str) -> Handler:
    """A console page's error as a page; any other path's as the API answers it (problem+json)."""
    async def handle(request: Request, exc: Exception) -> Response:
        if not request.url.path.startswith(PREFIX + "/"):
            return await api_handler(request, exc)
        answered = await api_handler(request, exc)  # the API's status for this error
        message = str(exc) if not isinstance(exc, HTTPException) else str(exc.detail)
        if isinstance(exc, RequestValidationError):
            message = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {_said(e)}" for e in exc.errors())
        return render(request, "error.html", None, status_code=status or answered.status_code, heading=heading,
                      message=message)

    return handle


def _said(error: dict[str, Any]) -> str:
    """A validation error in a person's words: the no-control-characters pattern is not shown as a regex."""
    if (error.get("ctx") or {}).get("pattern") == PLAIN_PARAMETER:
        return "must not contain control characters"
    return str(error["msg"])
