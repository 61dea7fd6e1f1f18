"""Liveness (/healthz: the process answers) and readiness (/readyz: database, broker and store answer, and
the model directory holds a pipeline the process could load)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import DispatcherDep, SettingsDep, StoreDep
from api.errors import problem
from api.openapi import problems
from service.core.db import check_database
from service.core.settings import Settings

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


@router.get("/healthz", name="healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", name="readyz", responses=problems(503))
def readyz(settings: SettingsDep, dispatcher: DispatcherDep, store: StoreDep) -> JSONResponse:
    probes: dict[str, Callable[[], Any]] = {
        "database": lambda: check_database(settings.database_url),
        "broker": dispatcher.check,
        "store": store.check,
        "model": lambda: _check_model(settings),
    }
    checks: dict[str, str] = {}
    for name, probe in probes.items():
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:  # hosts, ports and drivers' messages stay in the log: /readyz is public
            log.warning("readiness: %s unavailable: %s: %s", name, type(exc).__name__, exc)
            checks[name] = "unavailable"
    failed = [name for name, result in checks.items() if result != "ok"]
    if failed:
        return problem(503, f"not ready: {', '.join(failed)} unreachable", code="not_ready", checks=checks)
    return JSONResponse({"status": "ready", "checks": checks})


class ModelUnavailable(RuntimeError):
    pass


def _check_model(settings: Settings) -> None:
    """ZERASE_MODEL_DIR (every process reads the model's profile from it) and, where this process runs the
    model (torch is loaded anyway), ZERASE_DEVICE; the message names the variable and the path."""
    found = settings.model_problem() or (settings.device_problem() if settings.runs_model else None)
    if found:
        raise ModelUnavailable(found)
