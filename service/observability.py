"""Metrics read from the database at each scrape: jobs by status and the active deployment version, so
every API replica reports the same, right numbers whichever process ran the jobs. A database that
does not answer within `DB_TIMEOUT_S` makes the scrape report `zerase_metrics_db_up 0`, never hang
or fail.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.engine import make_url

from service.deployments.models import ActiveDeployment
from service.erasures.contract import JobStatus
from service.erasures.models import ErasureJob

log = logging.getLogger(__name__)

DB_TIMEOUT_S = 2.0  # libpq's connect_timeout counts whole seconds, 2 at least


class DatabaseCollector(Collector):
    """Jobs by status and the active deployment version, read from the database at scrape time."""

    def __init__(self, database_url: str, timeout_s: float = DB_TIMEOUT_S) -> None:
        self.engine = _bounded_engine(database_url, timeout_s)
        self.deadline_s = 2 * timeout_s + 1  # connect, then the queries

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # names are not reserved: a registry never calls collect() to learn them

    def collect(self) -> Iterator[GaugeMetricFamily]:
        started = time.perf_counter()
        # On a daemon thread with a deadline: a server that accepts connections but never answers
        # (frozen, network partition) cannot hold the scrape, nor the process at exit.
        answer: queue.Queue[tuple[dict[str, int], int | None] | Exception] = queue.Queue(maxsize=1)
        threading.Thread(target=lambda: answer.put(self._query()), name="metrics-db", daemon=True).start()
        try:
            result = answer.get(timeout=self.deadline_s)
        except queue.Empty:
            result = TimeoutError(f"no answer within {self.deadline_s}s")
        up = not isinstance(result, Exception)
        if isinstance(result, Exception):
            log.warning("metrics: the database did not answer: %s: %s", type(result).__name__, result)
        yield _gauge("zerase_metrics_db_up", "1 if the database answered this scrape's queries", int(up))
        yield _gauge("zerase_metrics_db_seconds", "Time the database queries of this scrape took",
                     time.perf_counter() - started)
        if isinstance(result, Exception):
            return
        counts, active = result
        jobs = GaugeMetricFamily("zerase_erasure_jobs", "Erasure jobs by status (from the database)",
                                 labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], counts.get(status.value, 0))
        yield jobs
        yield _gauge("zerase_active_deployment_version", "The active deployment version (0: the base model)",
                     active or 0)

    def _query(self) -> tuple[dict[str, int], int | None] | Exception:
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(select(ErasureJob.status, func.count()).group_by(ErasureJob.status))
                counts = {status: int(n) for status, n in rows}
                active = conn.scalar(select(ActiveDeployment.version).where(ActiveDeployment.id == 1))
            return counts, active
        except Exception as exc:
            return exc


def app_registry(database_url: str) -> CollectorRegistry:
    """What an API process exports: its process metrics and the database's."""
    registry = CollectorRegistry()
    registry.register(REGISTRY)  # the default registry is a collector too: collected on each scrape
    registry.register(DatabaseCollector(database_url))
    return registry


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _bounded_engine(url: str, timeout_s: float) -> Engine:
    """An engine of its own, one connection, every wait bounded: scrapes never queue behind the API's pool."""
    backend = make_url(url).get_backend_name()
    if backend == "postgresql":
        timeout_ms = int(timeout_s * 1000)
        return create_engine(url, pool_size=1, max_overflow=0, pool_timeout=timeout_s, pool_pre_ping=True,
                             connect_args={"connect_timeout": max(2, math.ceil(timeout_s)),
                                           "options": f"-c statement_timeout={timeout_ms}"})
    if backend == "sqlite":
        return create_engine(url, connect_args={"timeout": timeout_s, "check_same_thread": False})
    return create_engine(url, pool_pre_ping=True)
