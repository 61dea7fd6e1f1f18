"""Logging of `zerase serve` and `zerase worker`: text or JSON lines (ZERASE_LOG_FORMAT), each
carrying the id of the job the line was logged for.

`run_job` runs inside `job_context(job_id)`: a contextvar holds the id, and a filter on the
handler copies it into every record that reaches it, whichever logger emitted it (ours, Celery's,
SQLAlchemy's, a library's), so the core needs to know nothing about jobs.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import wraps
from typing import IO, Literal, ParamSpec, TypeVar

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

current_job_id: ContextVar[str | None] = ContextVar("zerase_job_id", default=None)

P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Every line logged in this context (this thread, and threads started with its context) names the job."""
    token = current_job_id.set(job_id)
    try:
        yield
    finally:
        current_job_id.reset(token)


def for_job(fn: Callable[P, R]) -> Callable[P, R]:
    """Run `fn(job_id, ...)` inside `job_context(job_id)`."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        job_id = args[0] if args else kwargs["job_id"]
        with job_context(str(job_id)):
            return fn(*args, **kwargs)

    return wrapper


class JobIdFilter(logging.Filter):
    """Sets `record.job_id` to the current job's id (None outside a job), unless the caller set it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            record.job_id = current_job_id.get()
        return True


class TextFormatter(logging.Formatter):
    """`2025-01-31 12:00:00,123 INFO service.erasures.runner [er_0193...]: message`; no brackets outside a job."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        job_id = getattr(record, "job_id", None)
        job = f" [{job_id}]" if job_id else ""
        return f"{self.formatTime(record)} {record.levelname} {record.name}{job}: {record.message}"


def json_formatter() -> logging.Formatter:
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, job_id, and any extra fields."""
    return JsonFormatter("%(levelname)s %(name)s %(message)s %(job_id)s", timestamp="time",
                         rename_fields={"levelname": "level", "name": "logger"},
                         reserved_attrs=[*RESERVED_ATTRS, "color_message"])  # uvicorn's copy with ANSI colours


def configure_logging(log_format: Literal["text", "json"], level: str | int, stream: IO[str] | None = None) -> None:
    """Root logger -> one handler on `stream` (stderr) in `log_format`; uvicorn's, Celery's, transformers' and
    diffusers' loggers propagate to it. Calling it again replaces the handler it added before (and leaves
    others, pytest's, alone)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(json_formatter() if log_format == "json" else TextFormatter())
    handler.addFilter(JobIdFilter())
    handler.set_name("zerase")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "zerase"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task", "celery.redirected"):
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True
    logging.captureWarnings(True)  # warnings.warn(...) from libraries: logged lines too, with the job id
    # httpx logs each request's full URL at INFO (a webhook URL's query may carry a token): its warnings only.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    adopt_model_libraries()


MODEL_LIBRARIES = ("transformers", "diffusers")


def adopt_model_libraries() -> None:
    """Route transformers' and diffusers' logs through our handler (they print through handlers of their
    own by default). Only the libraries already imported: importing them here would load torch into the
    control plane, so the code that loads a model calls this again once it has."""
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "zerase"]
    json_lines = bool(ours) and not isinstance(ours[0].formatter, TextFormatter)
    for library in MODEL_LIBRARIES:
        if library not in sys.modules:
            continue
        library_logging = importlib.import_module(f"{library}.utils.logging")
        library_logging.disable_default_handler()
        library_logging.enable_propagation()
        if json_lines:  # no tqdm bars among the JSON lines
            library_logging.disable_progress_bar()
