"""Typed dependencies: what a route needs, taken from the app's state (made once in create_app)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from service.core.settings import Settings
from service.core.store import ArtifactStore
from service.deployments.serving import GenerationService
from worker.dispatch import Dispatcher

log = logging.getLogger(__name__)


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_sessions(request: Request) -> sessionmaker[Session]:
    sessions: sessionmaker[Session] = request.app.state.sessions
    return sessions


def get_db(sessions: Annotated[sessionmaker[Session], Depends(get_sessions)]) -> Iterator[Session]:
    session = sessions()
    try:
        yield session
    finally:
        try:
            session.close()
        except DBAPIError:
            # The connection died under the session (database restarted): the pool drops it, and the
            # response, already decided, stands. Raising here would only break the connection to the client.
            log.warning("closing a session on a dead database connection failed", exc_info=True)


def get_dispatcher(request: Request) -> Dispatcher:
    dispatcher: Dispatcher = request.app.state.dispatcher
    return dispatcher


def get_store(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.app.state.store
    return store


def get_generator(request: Request) -> GenerationService:
    generator: GenerationService = request.app.state.generator
    return generator


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]
SessionDep = Annotated[Session, Depends(get_db)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]
GeneratorDep = Annotated[GenerationService, Depends(get_generator)]
