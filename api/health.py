"""Liveness (/healthz: the process answers) and readiness (/readyz: database, broker and store answer)."""

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
