"""The FastAPI application: `create_app(settings)`; `uvicorn --factory api.app:create_app` works too."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import admin, deployments, erasures, errors, generation, health, metrics
from api.limits import RequestLimits
from service import jobs
from service.db import session_factory
from service.generation import GenerationService
from service.queue import dispatcher_for
from service.settings import Settings, get_settings
from service.store import store_for


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    dispatcher = dispatcher_for(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        jobs.preload_core()
        dispatcher.start()  # inprocess://: the embedded worker thread and its sweeper
        try:
            yield
        finally:
            dispatcher.stop()

    app = FastAPI(title="Z-Erase", version="0.1.0", lifespan=lifespan,
                  description="Concept erasure for diffusion transformers: submit an erasure, follow its "
                              "progress, download the LoRA that removes the concept.")
    app.state.settings = settings
    app.state.sessions = session_factory(settings.database_url)
    app.state.dispatcher = dispatcher
    app.state.store = store_for(settings)
    app.state.generator = GenerationService(settings, app.state.sessions, app.state.store)
    errors.install(app)
    app.add_middleware(RequestLimits, max_body_bytes=settings.max_request_bytes)
    if settings.api_routes in ("all", "control"):
        app.include_router(erasures.router)
        app.include_router(deployments.router)
        app.include_router(admin.router)
    if settings.api_routes in ("all", "generation"):  # ZERASE_API_ROUTES: a generation service of its own
        app.include_router(generation.router)
    app.include_router(health.router)
    metrics.install(app, settings)  # GET /metrics, public like /healthz
    return app
