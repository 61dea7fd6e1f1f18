"""The sweeper thread: requeues jobs whose worker went silent and resends what the broker never took.

It runs in every `zerase worker` and, with the embedded broker, in `zerase serve`.
"""

from __future__ import annotations

import logging
import threading
import time

from service.core.db import session_factory
from service.core.settings import Settings
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
