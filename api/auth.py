"""Bearer API keys and roles: `Depends(require(Role.MODERATOR))` on a router guards all its routes.

Roles: admin (everything, keys and audit included), moderator (erasures, deployments), generator
(/generate only). Health, readiness, metrics and the OpenAPI document are open.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import SessionDep
from service.audit.service import Actor
from service.keys.contract import Role
from service.keys.service import authenticate

bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer zk_...`")


class AuthError(Exception):
    """401 (no or unknown key) or 403 (the key's role may not do this); answered as problem+json."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


def current_actor(request: Request, db: SessionDep,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Actor:
    # The request's own session (FastAPI makes one per request and shares it with the route).
    if credentials is None:
        raise AuthError(401, "an API key is required: send `Authorization: Bearer <key>`")
    key = authenticate(db, credentials.credentials)
    if key is None:
        raise AuthError(401, "the API key is unknown or revoked")
    actor = Actor(key.name, key.id, key.role)
    request.state.actor = actor  # for the access log
    return actor


def require(*roles: Role) -> Callable[[Actor], Actor]:
    """A dependency that lets admins and the given roles through."""
    allowed = {Role.ADMIN, *roles}

    def check(actor: Annotated[Actor, Depends(current_actor)]) -> Actor:
        if actor.role not in allowed:
            names = " or ".join(sorted(allowed))
            raise AuthError(403, f"the key {actor.name!r} has role {actor.role}; this needs {names}")
        return actor

    return check


# Route parameters: the acting key, already checked against the router's roles (FastAPI caches
# the dependency per request, so the key is looked up once).
ActorDep = Annotated[Actor, Depends(current_actor)]
