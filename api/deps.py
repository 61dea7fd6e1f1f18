"""Typed dependencies: what a route needs, taken from the app's state (made once in create_app)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session, sessionmaker

from api.schemas import Text
from service.queue import Dispatcher
from service.settings import Settings
from service.store import ArtifactStore


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_sessions(request: Request) -> sessionmaker[Session]:
    sessions: sessionmaker[Session] = request.app.state.sessions
    return sessions


def get_db(sessions: Annotated[sessionmaker[Session], Depends(get_sessions)]) -> Iterator[Session]:
    with sessions() as session:
        yield session


def get_dispatcher(request: Request) -> Dispatcher:
    dispatcher: Dispatcher = request.app.state.dispatcher
    return dispatcher


def get_store(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.app.state.store
    return store


def requester(x_requested_by: Annotated[Text | None, Header(
        description="Who asks (moderator, team, ticket system)")] = None) -> str:
    # No authentication yet: the requester names itself, and the name is recorded as given.
    return x_requested_by or "anonymous"


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]
SessionDep = Annotated[Session, Depends(get_db)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]
RequesterDep = Annotated[str, Depends(requester)]
