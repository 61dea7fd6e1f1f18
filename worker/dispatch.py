"""Handing jobs to workers, chosen by broker URL: `redis://`/`amqp://` (Celery) or `inprocess://`.

Either way the broker only carries "look at job N"; the database holds the job and its state, so
a lost or duplicated message costs nothing but a no-op claim, and the sweeper resends what is lost.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from service.core.db import session_factory
from service.core.settings import Settings
from service.deployments.evaluation import evaluate_next
from service.erasures import lifecycle
from service.erasures.contract import MAX_PRIORITY
from service.erasures.runner import run_job

log = logging.getLogger(__name__)

TASK_NAME = "zerase.run_job"
POLL_S = 2.0  # the embedded worker also polls, so a job committed by another process is found


class Dispatcher(Protocol):
    def enqueue(self, job_id: str, priority: int = 0) -> None:
        """Hand "look at job N" to a worker; `priority` 0 (normal) .. MAX_PRIORITY (most urgent)."""
        ...

    def check(self) -> None:
        """Raise if jobs could not be handed over now."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


def make_celery(settings: Settings) -> Celery:
    """The Celery app both sides use: the API to send, `zerase worker` to consume."""
    app = Celery("zerase", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=settings.queue_name,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # Ack after the job ends, one message at a time: a worker that dies mid-job gives its
        # message back instead of losing it, and never sits on messages others could run.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Redis redelivers an unacked message after the visibility timeout: it must outlast any job.
        broker_transport_options={"visibility_timeout": settings.job_timeout_s + 3600,
                                  "socket_connect_timeout": 5,
                                  # One Redis list per priority, read most urgent first (Celery's Redis
                                  # priority emulation); AMQP brokers take x-max-priority below.
                                  "priority_steps": list(range(MAX_PRIORITY + 1)), "sep": ":",
                                  "queue_order_strategy": "priority",
                                  # Several deployments (or test sessions) can share one Redis.
                                  **({"global_keyprefix": settings.broker_key_prefix}
                                     if settings.broker_key_prefix else {})},
        broker_connection_retry_on_startup=True,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        worker_hijack_root_logger=False,
        task_queue_max_priority=MAX_PRIORITY,
        task_default_priority=MAX_PRIORITY,  # normal jobs, in Kombu's order
    )
    return app


class CeleryDispatcher:
    def __init__(self, settings: Settings, app: Celery | None = None) -> None:
        self.app = app or make_celery(settings)
        self.queue = settings.queue_name

    def enqueue(self, job_id: str, priority: int = 0) -> None:
        # Kombu's Redis transport serves priority 0 first: ours counts the other way.
        self.app.send_task(TASK_NAME, args=[job_id], queue=self.queue, priority=MAX_PRIORITY - priority)

    def check(self) -> None:
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.app.close()


class InProcessDispatcher:
    """The embedded default: a worker thread in this process, the database as the queue."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def enqueue(self, job_id: str, priority: int = 0) -> None:
        self.wake.set()  # the thread takes the most urgent queued job itself (lifecycle.next_queued)

    def check(self) -> None:
        if self.settings.embedded_worker and not all(t.is_alive() for t in self.threads):
            raise RuntimeError("the embedded worker thread is not running")

    def start(self) -> None:
        if not self.settings.embedded_worker or self.threads:
            return
        from worker.sweeper import Sweeper

        self.threads = [threading.Thread(target=self._work, name="zerase-worker", daemon=True),
                        Sweeper(self.settings, self, self.stopping)]
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _work(self) -> None:
        sessions = session_factory(self.settings.database_url)
        while not self.stopping.is_set():
            self.wake.clear()  # before looking, so a job enqueued while we look still wakes us
            try:
                if evaluate_next(self.settings) is not None:  # a deployment waiting to be judged goes first
                    continue
                with sessions() as db:
                    job_id = lifecycle.next_queued(db)
                if job_id is not None:
                    run_job(job_id, self.settings, stop=self.stopping.is_set)
                    continue
            except Exception:  # keep the worker alive through a database hiccup
                log.exception("embedded worker loop failed; retrying")
            self.wake.wait(POLL_S)


def dispatcher_for(settings: Settings) -> Dispatcher:
    return InProcessDispatcher(settings) if settings.inprocess else CeleryDispatcher(settings)


def hand_over(dispatcher: Dispatcher, sessions: sessionmaker[Session], job_id: str,
              priority: int | None = None) -> None:
    """Send "look at job N" (`priority`: the job's, read from its row when the caller does not know it);
    if the broker is down the job stays queued and the sweeper resends it."""
    try:
        if priority is None:
            with sessions() as db:
                priority = lifecycle.get_job(db, job_id).priority
        dispatcher.enqueue(job_id, priority)
    except Exception:
        log.warning("could not enqueue job %s; the sweeper will resend it", job_id, exc_info=True)
        return
    with sessions() as db:
        lifecycle.mark_enqueued(db, job_id)
