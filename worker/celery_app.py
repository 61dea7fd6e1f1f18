"""The Celery app of `zerase worker` (`celery -A worker.celery_app worker` works too).

Settings come from the environment once per process; the configuration (late ack, prefetch 1,
visibility timeout) lives in service.queue.make_celery, shared with the API that sends the tasks.
"""

from __future__ import annotations

import threading
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from service.queue import CeleryDispatcher, Sweeper, make_celery
from service.settings import get_settings

settings = get_settings()
app = make_celery(settings)
app.conf.imports = ["worker.tasks"]

_stopping = threading.Event()


@worker_ready.connect
def _start_sweeper(**_: Any) -> None:
    Sweeper(settings, CeleryDispatcher(settings, app), _stopping).start()


@worker_shutdown.connect
def _stop_sweeper(**_: Any) -> None:
    _stopping.set()
