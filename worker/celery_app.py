"""The Celery app of `zerase worker` (`celery -A worker.celery_app worker` works too).

Settings come from the environment once per process; the configuration (late ack, prefetch 1,
visibility timeout) lives in worker.dispatch.make_celery, shared with the API that sends the tasks.
"""

from __future__ import annotations

import threading
from typing import Any

from celery.signals import setup_logging, worker_init, worker_ready, worker_shutdown
from kombu import Connection

from service import flows
from service.core.logs import configure_logging
from service.core.metrics import start_worker_server
from service.core.settings import get_settings
from worker.dispatch import CeleryDispatcher, make_celery
from worker.sweeper import DeploymentJudge, Sweeper


class ConfiguredUrlConnection(Connection):  # type: ignore[misc]
    """Shows the broker URL as configured. kombu masks a password even where none was set, and
    `redis://:**@host` in "Cannot connect to ..." reads as a wrong password; a real one stays masked."""

    def as_uri(self, include_password: bool = False, mask: str = "**", **kwargs: Any) -> str:
        # An empty mask leaves the password out (kombu's as_url): nothing was set, so nothing is shown.
        return str(super().as_uri(include_password, mask if self.password else "", **kwargs))


settings = get_settings()
flows.install()  # what follows a finished job (auto-deploy) runs in the process that finished it
app = make_celery(settings)
app.conf.imports = ["worker.tasks"]
app.amqp.Connection = ConfiguredUrlConnection  # every connection the worker makes (and logs) is one

_stopping = threading.Event()


@setup_logging.connect
def _logging(loglevel: int | str | None = None, **_: Any) -> None:
    # A receiver here means Celery configures no logging of its own: ours, text or JSON with job ids.
    configure_logging(settings.log_format, loglevel or settings.log_level)


@worker_init.connect
def _metrics(**_: Any) -> None:
    # Counters of the jobs this process runs: `zerase worker` runs them in this process (solo pool).
    if settings.worker_metrics_port:
        start_worker_server(settings.worker_metrics_port)


@worker_ready.connect
def _start_sweeper(**_: Any) -> None:
    # The judge's thread and the jobs' both import the model stack on first use, and diffusers' lazy module is not
    # safe to import from two threads at once (a judge failed with "cannot import name 'ZImagePipeline'" while a job
    # was importing it): imported here, before either starts.
    import zerase.evaluate.served_evaluation  # noqa: F401
    import zerase.train.erasure  # noqa: F401

    Sweeper(settings, CeleryDispatcher(settings, app), _stopping).start()
    DeploymentJudge(settings, _stopping).start()


@worker_shutdown.connect
def _stop_sweeper(**_: Any) -> None:
    _stopping.set()
