"""The FastAPI application: `create_app(settings)`; `uvicorn --factory api.app:create_app` works too."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import console, errors, health, metrics, openapi
from api.approvals import routes as approvals
from api.audit import routes as audit
from api.deployments import routes as deployments
from api.erasures import routes as erasures
from api.generation import routes as generation
from api.keys import routes as keys
from api.limits import RequestLimits
from api.webhooks import routes as webhooks
from service import flows
from service.core.db import session_factory
from service.core.settings import Settings, get_settings
from service.core.store import store_for
from service.deployments.serving import GenerationService
from service.erasures.runner import preload_model_stack
from service.webhooks.deliver import Deliverer
from worker.dispatch import dispatcher_for


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    dispatcher = dispatcher_for(settings)
    # Webhook deliveries are sent by the processes that serve the control routes (where they are managed).
    deliverer = Deliverer(settings) if settings.api_routes in ("all", "control") else None
    flows.install()  # what follows a finished job (auto-deploy), for jobs the API or its worker thread end

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.runs_model:
            preload_model_stack()  # this process runs the model; a control plane alone never imports torch
        dispatcher.start()  # inprocess://: the embedded worker thread and its sweeper
        if deliverer:
            deliverer.start()
        try:
            yield
        finally:
            if deliverer:
                deliverer.stop()
            dispatcher.stop()

    app = FastAPI(title="Z-Erase", version="0.1.0", lifespan=lifespan, generate_unique_id_function=openapi.operation_id,
                  description="Concept erasure for diffusion transformers: submit an erasure, follow its "
                              "progress, download the LoRA that removes the concept.")
    app.state.settings = settings
    app.state.sessions = session_factory(settings.database_url)
    app.state.dispatcher = dispatcher
    app.state.store = store_for(settings)
    app.state.generator = GenerationService(settings, app.state.sessions, app.state.store)
    errors.install(app)
    app.add_middleware(RequestLimits, max_body_bytes=settings.max_request_bytes,
                       form_prefix=console.PREFIX + "/" if settings.api_routes in ("all", "control") else None)
    if settings.api_routes in ("all", "control"):
        app.include_router(erasures.router)
        app.include_router(deployments.router)
        app.include_router(approvals.router)
        app.include_router(keys.router)
        app.include_router(audit.router)
        app.include_router(webhooks.router)
    if settings.api_routes in ("all", "generation"):  # ZERASE_API_ROUTES: a generation service of its own
        app.include_router(generation.router)
    app.include_router(health.router)
    if settings.api_routes in ("all", "control"):
        console.install(app)  # after errors.install: its error pages wrap the API's handlers
    metrics.install(app, settings)  # GET /metrics, public like /healthz
    openapi.install(app)
    return app
