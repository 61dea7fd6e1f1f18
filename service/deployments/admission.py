"""Who may wait for the model: a bounded queue for /generate, and a bound per API key.

Every waiting request holds one of the HTTP server's worker threads, which the control routes share:
without a bound, a flood of /generate calls takes them all and the control plane stops answering.
Past either bound a request is refused at once (429 with Retry-After), never queued.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from service.core.errors import Exhausted


class GenerationBusy(Exhausted):
    retry_after_s = 1

    def __init__(self, detail: str, code: str) -> None:
        super().__init__(detail)
        self.code = code


class Admission:
    def __init__(self, max_waiting: int, max_per_key: int) -> None:
        self.max_waiting, self.max_per_key = max_waiting, max_per_key
        self._lock = threading.Lock()
        self._total = 0
        self._per_key: Counter[str] = Counter()

    @contextmanager
    def admit(self, key_id: str | None) -> Iterator[None]:
        """Hold a place for the duration of the block, or raise GenerationBusy."""
        key = key_id or "-"
        with self._lock:
            if self._total >= self.max_waiting:
                raise GenerationBusy(f"{self._total} generation requests are running or waiting; at most "
                                     f"{self.max_waiting} (ZERASE_GENERATION_QUEUE_SIZE)", "generation_queue_full")
            if self._per_key[key] >= self.max_per_key:
                raise GenerationBusy(f"this key has {self._per_key[key]} generation requests in flight; at most "
                                     f"{self.max_per_key} (ZERASE_GENERATION_PER_KEY)", "generation_key_limit")
            self._total += 1
            self._per_key[key] += 1
        try:
            yield
        finally:
            with self._lock:
                self._total -= 1
                self._per_key[key] -= 1
                if not self._per_key[key]:
                    del self._per_key[key]
