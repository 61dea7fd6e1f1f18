"""Process metrics: what this process did (training steps, generations, HTTP requests), in
prometheus_client's default registry with its process_* and python_* collectors; a Celery worker
exports its own on ZERASE_WORKER_METRICS_PORT. The database's metrics (jobs by status, the active
deployment) are read at scrape time by service.observability.
"""

from __future__ import annotations

import logging
import math

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

log = logging.getLogger(__name__)

disable_created_metrics()  # no *_created series next to each counter and histogram

TRAINING_STEPS = Counter("zerase_training_steps", "Training steps done by this process; rate() is the step rate")
GENERATION_SECONDS = Histogram(
    "zerase_generation_seconds", "POST /generate in the generation service, waiting for the model included, "
    "by outcome: ok, invalid (422), busy (429), unavailable (503: the safety patch cannot be applied), error",
    ["outcome"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, math.inf))
GENERATIONS_IN_PROGRESS = Gauge("zerase_generation_in_progress", "Generation requests running or waiting "
                                "for the model in this process")
GENERATION_PATCH_VERSION = Gauge("zerase_generation_patch_version", "The deployment version this process "
                                 "applied for generation (0: the base model; -1: none, or it could not be applied)")
GENERATION_PATCH_VERSION.set(-1)
GUARD_REFUSALS = Counter("zerase_guard_refusals_total", "/generate prompts refused by a takedown's prompt guard")
GUARD_REWRITES = Counter("zerase_guard_rewrites_total", "/generate prompts served with a guarded concept's words "
                         "replaced by its anchor")
GENERATION_BATCH_SIZE = Histogram("zerase_generation_batch_size", "Requests per /generate pipeline call "
                                  "(dynamic batching)", buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32))
GENERATION_QUEUE_SECONDS = Histogram("zerase_generation_queue_seconds", "Time a /generate request waited for its "
                                     "batch to start", buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                                                2, 5, 10, 30, math.inf))
HTTP_REQUESTS = Counter("zerase_http_requests", "HTTP requests answered, by method, route template and status",
                        ["method", "route", "status"])
HTTP_SECONDS = Histogram("zerase_http_request_seconds", "HTTP request latency by method and route template",
                         ["method", "route"])


def start_worker_server(port: int) -> None:
    """/metrics of this process on `port`, on a thread of its own (training steps, process metrics)."""
    from prometheus_client import start_http_server

    start_http_server(port)
    log.info("metrics on port %d", port)
