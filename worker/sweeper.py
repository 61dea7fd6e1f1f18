"""The sweeper thread: requeues jobs whose worker went silent and resends what the broker never took; and, in
`zerase worker`, the judge thread that evaluates deployments as served (the embedded worker does that itself).

The sweeper runs in every `zerase worker` and, with the embedded broker, in `zerase serve`.
"""

from __future__ import annotations

import logging
import threading
import time

from service.core.db import session_factory
from service.core.settings import Settings
from service.deployments.evaluation import evaluate_next
from service.erasures.idempotency import purge_expired
from service.erasures.sweep import sweep
from worker.dispatch import Dispatcher, hand_over

log = logging.getLogger(__name__)


class Sweeper(threading.Thread):
    """Every `sweep_interval_s`: requeue jobs whose worker went silent, resend what was never sent."""

    def __init__(self, settings: Settings, dispatcher: Dispatcher, stopping: threading.Event) -> None:
        super().__init__(name="zerase-sweeper", daemon=True)
        self.settings, self.dispatcher, self.stopping = settings, dispatcher, stopping

    def run(self) -> None:
        sessions = session_factory(self.settings.database_url)
        while True:
            started = time.monotonic()
            try:
                with sessions() as db:
                    for job_id in sweep(db, self.settings):
                        hand_over(self.dispatcher, sessions, job_id)
                with sessions() as db:
                    purge_expired(db, self.settings.idempotency_ttl_s)
            except Exception:
                log.exception("sweep failed; trying again next interval")
            if self.stopping.wait(max(0.0, self.settings.sweep_interval_s - (time.monotonic() - started))):
                return


class DeploymentJudge(threading.Thread):
    """Every few seconds: judge the deployment versions queued for it (the database is the queue), one at a time,
    sharing the process's model with its jobs (service.erasures.runner.model_in_use)."""

    POLL_S = 2.0

    def __init__(self, settings: Settings, stopping: threading.Event) -> None:
        super().__init__(name="zerase-deployment-judge", daemon=True)
        self.settings, self.stopping = settings, stopping

    def run(self) -> None:
        while not self.stopping.wait(self.POLL_S):
            try:
                while evaluate_next(self.settings) is not None and not self.stopping.is_set():
                    pass
            except Exception:
                log.exception("judging deployments failed; trying again")
