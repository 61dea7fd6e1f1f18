"""Dynamic batching for /generate: requests waiting for the model that share what a batch must share
(size, steps, guidance, negative prompt) run as one pipeline call, up to `max_batch` requests, waiting
at most `max_wait_s` for the batch to fill.

No thread of its own: the first waiting request that finds the model free leads, collects the oldest
request's compatible company (waiting up to `max_wait_s` from then for it to fill), runs it and hands
every member its result. Each image keeps its own
seeded noise (zerase.model.generate), so batching changes no pixel. One batch is one version check and one
sampling call, so a batch never mixes two safety-patch versions.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from service.core import metrics

R = TypeVar("R")


@dataclass(eq=False)
class Pending(Generic[R]):
    group: Hashable  # requests with equal groups may share a batch
    payload: Any
    enqueued: float = field(default_factory=time.monotonic)
    done: bool = False
    result: R | None = None
    error: BaseException | None = None


class Batcher(Generic[R]):
    def __init__(self, run: Callable[[Sequence[Pending[R]]], Sequence[R | BaseException]], max_batch: int,
                 max_wait_s: float):
        self._run, self.max_batch, self.max_wait_s = run, max_batch, max_wait_s
        self._cond = threading.Condition()
        self._queue: deque[Pending[R]] = deque()
        self._running = False
        self.recent_sizes: deque[int] = deque(maxlen=256)  # the last batches' sizes, for tests and logs

    def submit(self, group: Hashable, payload: Any) -> R:
        """Block until `payload` has run in some batch; its result, or the error its batch raised."""
        mine: Pending[R] = Pending(group, payload)
        with self._cond:
            self._queue.append(mine)
            self._cond.notify_all()
            while not mine.done:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                batch = self._collect()
                self._cond.release()
                try:
                    self._execute(batch)
                finally:
                    self._cond.acquire()
                    self._running = False
                    for member in batch:
                        member.done = True
                    self._cond.notify_all()
        if mine.error is not None:
            raise mine.error
        return mine.result  # type: ignore[return-value]

    def _collect(self) -> list[Pending[R]]:
        """The oldest request and its compatible followers (in arrival order), once the batch is full or
        `max_wait_s` has passed since the model became free for it. Called holding the condition's lock.

        The wait counts from when the model is free, not from the oldest request's arrival: under load the
        oldest has waited out a whole batch already, and starting at once would take only the requests that
        queued meanwhile while the clients the last batch answered are on their way back; closed-loop
        clients then settle into half-full batches (8 clients: 4 + 4, measured) instead of full ones."""
        head = self._queue[0]
        deadline = time.monotonic() + self.max_wait_s  # collection starts when the model is free
        while True:
            company = [p for p in self._queue if p.group == head.group][: self.max_batch]
            left = deadline - time.monotonic()
            if len(company) >= self.max_batch or left <= 0:
                break
            self._cond.wait(timeout=left)
        for member in company:
            self._queue.remove(member)
        return company

    def _execute(self, batch: list[Pending[R]]) -> None:
        started = time.monotonic()
        for member in batch:
            metrics.GENERATION_QUEUE_SECONDS.observe(started - member.enqueued)
        metrics.GENERATION_BATCH_SIZE.observe(len(batch))
        self.recent_sizes.append(len(batch))
        try:
            results = self._run(batch)
            for member, result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):  # this member's own refusal (a guarded prompt, say)
                    member.error = result
                else:
                    member.result = result
        except BaseException as exc:  # every member gets the batch's error (e.g. the patch cannot be applied)
            for member in batch:
                member.error = exc
