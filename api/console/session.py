"""Who is signed in to the console, and the checks every page and form makes.

The session cookie is HttpOnly and SameSite=Strict; each form carries the session's CSRF token as well,
checked here before anything changes. Pages take `Page(role...)` (signed in, and a role the API would
let through); forms take `Form(role...)` (the same, plus the CSRF token).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Form, Request
from sqlalchemy.orm import Session

from api.deps import SessionDep
from service.keys import sessions
from service.keys.contract import Role
from service.keys.sessions import SignedIn

COOKIE = "zerase_console"
LOGIN_CSRF_COOKIE = "zerase_console_login"  # double-submit token for the sign-in form (no session yet)
PREFIX = "/console"


class SignInRequired(Exception):
    """No live session: the browser is sent to the sign-in page (and back here afterwards)."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class NotAllowed(Exception):
    """Signed in, but the key's role may not use this page or form (403, as the API would answer)."""

    def __init__(self, role: str | None, allowed: set[Role]) -> None:
        super().__init__(f"your key's role is {role}; this needs {' or '.join(sorted(allowed))}")


class CsrfRejected(Exception):
    """A form came back without this session's CSRF token (403; nothing changed)."""


@dataclass(frozen=True)
class User:
    """The signed-in key, its session, and the request's database session."""

    session: SignedIn
    db: Session

    @property
    def role(self) -> str:
        return self.session.actor.role or ""

    def can(self, *roles: Role) -> bool:
        return self.role in {Role.ADMIN, *roles}


def login_url(next_path: str) -> str:
    return f"{PREFIX}/login?next={quote(next_path, safe='')}"


def safe_next(next_path: str | None) -> str:
    """Only a path of this console: `next` must never send a signed-in browser elsewhere."""
    if next_path and next_path.startswith(PREFIX + "/") and not next_path.startswith("//") and "\\" not in next_path:
        return next_path
    return PREFIX + "/"


def current_user(request: Request, db: SessionDep) -> User | None:
    signed_in = sessions.current(db, request.cookies.get(COOKIE))
    if signed_in is None:
        return None
    request.state.actor = signed_in.actor  # for the access log
    return User(signed_in, db)


def _signed_in(request: Request, user: Annotated[User | None, Depends(current_user)]) -> User:
    if user is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(path if request.method == "GET" else PREFIX + "/")
    return user


def Page(*roles: Role) -> Callable[..., User]:  # noqa: N802 (reads as a type in route signatures)
    """A dependency: the signed-in user, if an admin or one of `roles`."""
    allowed = {Role.ADMIN, *roles}

    def check(user: Annotated[User, Depends(_signed_in)]) -> User:
        if user.role not in allowed:
            raise NotAllowed(user.role, allowed)
        return user

    return check


def FormOf(*roles: Role) -> Callable[..., User]:  # noqa: N802
    """`Page(*roles)`, and the form's CSRF token must be this session's."""
    page = Page(*roles)

    # Defaults, not Annotated: with postponed annotations FastAPI could not see the local `page`.
    def check(user: User = Depends(page), csrf_token: str = Form("")) -> User:  # noqa: B008
        if not secrets.compare_digest(csrf_token.encode(), user.session.csrf_token.encode()):
            raise CsrfRejected("the form's CSRF token is missing or not this session's; reload the page")
        return user

    return check
