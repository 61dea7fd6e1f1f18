"""Sign in with an API key, sign out."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from api.console.render import render
from api.console.session import COOKIE, LOGIN_CSRF_COOKIE, PREFIX, CsrfRejected, FormOf, User, current_user, safe_next
from api.deps import SessionDep, SettingsDep
from service.keys import sessions
from service.keys.contract import Role

router = APIRouter()


@router.get("/", name="console-home")
def home(user: Annotated[User | None, Depends(current_user)]) -> RedirectResponse:
    if user is None:
        return RedirectResponse(PREFIX + "/login", status_code=303)
    # The first page the role may use: a generator key only has the playground.
    start = "/erasures" if user.can(Role.MODERATOR) else "/playground"
    return RedirectResponse(PREFIX + start, status_code=303)


@router.get("/login", name="console-login")
def login_page(request: Request, settings: SettingsDep, next: str | None = None) -> Response:  # noqa: A002
    token = secrets.token_urlsafe(32)
    response = render(request, "login.html", None, csrf_token=token, next=safe_next(next), error=None)
    _login_cookie(response, token, settings.console_secure_cookie)
    return response


@router.post("/login", name="console-sign-in")
def sign_in(request: Request, db: SessionDep, settings: SettingsDep, api_key: Annotated[str, Form()] = "",
            csrf_token: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "") -> Response:  # noqa: A002
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not secrets.compare_digest(expected.encode(), csrf_token.encode()):
        raise CsrfRejected("the sign-in form's CSRF token does not match; reload the sign-in page")
    made = sessions.sign_in(db, api_key.strip(), settings.console_session_ttl_s)
    if made is None:
        token = secrets.token_urlsafe(32)
        response = render(request, "login.html", None, status_code=401, csrf_token=token, next=safe_next(next),
                          error="This API key is unknown or revoked.")
        _login_cookie(response, token, settings.console_secure_cookie)
        return response
    cookie, _ = made
    redirect = RedirectResponse(safe_next(next), status_code=303)
    redirect.set_cookie(COOKIE, cookie, max_age=int(settings.console_session_ttl_s), path=PREFIX, httponly=True,
                        samesite="strict", secure=settings.console_secure_cookie)
    redirect.delete_cookie(LOGIN_CSRF_COOKIE, path=PREFIX)
    return redirect


@router.post("/logout", name="console-sign-out")
def sign_out(user: Annotated[User, Depends(FormOf(Role.MODERATOR, Role.GENERATOR))]) -> RedirectResponse:
    sessions.sign_out(user.db, user.session)
    response = RedirectResponse(PREFIX + "/login", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX)
    return response


def _login_cookie(response: Response, token: str, secure: bool) -> None:
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, path=PREFIX, httponly=True, samesite="strict",
                        secure=secure)
