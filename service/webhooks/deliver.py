"""The deliverer: sends due deliveries, signed per Standard Webhooks, and retries the failed ones.

`deliver_due` is one pass (tests call it directly); `Deliverer` runs passes on a thread of the API process.
Both run a `_Pump` on an asyncio loop: it claims due deliveries while fewer than MAX_IN_FLIGHT are being
sent, at most one per webhook, so a slow receiver holds up only its own deliveries. Each attempt has a
wall-clock deadline (send.py). A delivery is claimed on its own before it is sent, by pushing its due time
past the lease, longer than the deadline (PostgreSQL: FOR UPDATE SKIP LOCKED, so two API processes never
claim the same one; SQLite: under the write lock). A process that dies mid-send leaves a claim that
expires, and the delivery is sent again: at least once, with the same `webhook-id` for the receiver to
deduplicate by; never while the first send is still open.

A send that is not a 2xx (a redirect included: none is followed), times out or cannot connect is tried
again after base, 2x base, 4x base... (ZERASE_WEBHOOK_RETRY_BASE_S) until it has had
ZERASE_WEBHOOK_MAX_ATTEMPTS tries. A target the allowlist refuses now fails at once. Deleting a webhook
fails its pending deliveries, and a send to it under way is aborted and not retried.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.core.db import serialize_writes, session_factory
from service.core.settings import Settings
from service.core.tables import utcnow
from service.webhooks.contract import MAX_BACKOFF_S, MAX_ERROR, MAX_IN_FLIGHT, DeliveryStatus
from service.webhooks.models import Attempt, Delivery, Subscription
from service.webhooks.send import Claimed, Outcome, attempt, http_client
from service.webhooks.targets import TargetPolicy

log = logging.getLogger(__name__)
T = TypeVar("T")


def deliver_due(settings: Settings, *, limit: int = 100) -> int:
    """Send the deliveries due now (and those that fall due meanwhile) until none is due or being sent, at
    most `limit`: the number of sends started (refusals included)."""
    return _run(_one_pass(settings, limit))


async def _one_pass(settings: Settings, limit: int) -> int:
    async with http_client(settings) as http:
        pump, never = _Pump(settings, http), asyncio.Event()
        try:
            while True:
                await pump.fill(limit)
                if not pump.sending:
                    return pump.started
                await pump.settle(settings.webhook_poll_interval_s, never)
        finally:
            await pump.drain()


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on a loop of its own, with threads enough for every send's DNS lookup and the claims beside them."""
    with asyncio.Runner() as runner:
        runner.get_loop().set_default_executor(ThreadPoolExecutor(MAX_IN_FLIGHT + 2, "webhook-io"))
        return runner.run(coroutine)


class _Pump:
    """The sends in flight: at most MAX_IN_FLIGHT, at most one per webhook (keyed by its id)."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient) -> None:
        self.settings, self.http = settings, http
        self.sessions = session_factory(settings.database_url)
        self.policy = TargetPolicy.of(settings)
        # Longer than an attempt can last (the deadline, then a cancelled request's close), so a claim never
        # expires while its send is open; the margin covers writing the outcome.
        self.lease = timedelta(seconds=2 * settings.webhook_timeout_s + 30)
        self.sending: dict[str, tuple[str, asyncio.Task[None]]] = {}  # webhook id -> (delivery id, its send)
        self.started = 0

    async def fill(self, limit: int | None = None) -> None:
        """Claim due deliveries while a slot is free, skipping webhooks that already have a send in flight."""
        while len(self.sending) < MAX_IN_FLIGHT and (limit is None or self.started < limit):
            claimed = await asyncio.to_thread(_claim, self.sessions, self.lease, frozenset(self.sending))
            if claimed is None:
                return
            self.sending[claimed.subscription_id] = (claimed.id, asyncio.create_task(self._deliver(claimed)))
            self.started += 1

    async def settle(self, wait_s: float, wake: asyncio.Event) -> None:
        """Wait until a send ends, `wake` is set or `wait_s` has passed; forget the sends that ended, and
        cancel those whose delivery is no longer pending (its webhook was deleted meanwhile)."""
        waker = asyncio.create_task(wake.wait())
        await asyncio.wait([waker, *(task for _, task in self.sending.values())], timeout=wait_s,
                           return_when=asyncio.FIRST_COMPLETED)
        waker.cancel()
        self.sending = {k: v for k, v in self.sending.items() if not v[1].done()}
        if self.sending:
            dropped = await asyncio.to_thread(_not_pending, self.sessions, [d for d, _ in self.sending.values()])
            for delivery_id, task in self.sending.values():
                if delivery_id in dropped:
                    task.cancel()

    async def drain(self) -> None:
        """Let the sends under way end (each within its deadline) and their outcomes be written."""
        await asyncio.gather(*(task for _, task in self.sending.values()), return_exceptions=True)
        self.sending.clear()

    async def _deliver(self, claimed: Claimed) -> None:
        outcome = await attempt(self.http, claimed, self.policy, self.settings.webhook_timeout_s) \
            if claimed.subscription_live else Outcome(None, "the webhook was deleted", 0, final=True)
        try:
            await asyncio.to_thread(_record, self.sessions, claimed.id, outcome, self.settings)
        except Exception:  # the database is down, say: the claim expires and the delivery is sent again
            log.exception("webhook delivery %s: its outcome was not recorded", claimed.id)


def _claim(sessions: sessionmaker[Session], lease: timedelta, busy: frozenset[str]) -> Claimed | None:
    now = utcnow()
    due = [Delivery.status == DeliveryStatus.PENDING, Delivery.next_attempt_at <= now]
    if busy:
        due.append(Delivery.subscription_id.not_in(busy))
    with sessions() as db:
        if db.scalar(select(Delivery.id).where(*due).limit(1)) is None:  # idle: no lock taken
            return None
        serialize_writes(db)
        delivery = db.scalar(select(Delivery).where(*due).order_by(Delivery.next_attempt_at).limit(1)
                             .with_for_update(skip_locked=True))
        if delivery is None:
            return None
        subscription = db.get(Subscription, delivery.subscription_id)
        assert subscription is not None  # a foreign key
        delivery.next_attempt_at = now + lease
        claimed = Claimed(delivery.id, subscription.id, subscription.url, subscription.secret, delivery.payload,
                          subscription.deleted_at is None)
        db.commit()
        return claimed


def _not_pending(sessions: sessionmaker[Session], delivery_ids: list[str]) -> set[str]:
    with sessions() as db:
        return set(db.scalars(select(Delivery.id).where(Delivery.id.in_(delivery_ids),
                                                        Delivery.status != DeliveryStatus.PENDING)))


def backoff(attempts: int, base_s: float) -> timedelta:
    """The wait after the `attempts`-th failed try: base, 2x base, 4x base..., at most a day."""
    return timedelta(seconds=min(base_s * 2 ** (attempts - 1), MAX_BACKOFF_S))


def _record(sessions: sessionmaker[Session], delivery_id: str, outcome: Outcome, settings: Settings) -> None:
    error = outcome.error[:MAX_ERROR] if outcome.error else None
    with sessions() as db:
        serialize_writes(db)
        delivery = db.get(Delivery, delivery_id, with_for_update=True)
        if delivery is None or delivery.status != DeliveryStatus.PENDING:  # deleted with its webhook meanwhile
            return
        now = utcnow()
        db.add(Attempt(delivery_id=delivery_id, at=now, status_code=outcome.status_code, error=error,
                       duration_ms=outcome.duration_ms))
        delivery.attempts += 1
        delivery.last_status_code, delivery.last_error = outcome.status_code, error
        delivery.last_duration_ms = outcome.duration_ms
        if outcome.ok or outcome.final or delivery.attempts >= settings.webhook_max_attempts:
            delivery.status = DeliveryStatus.SUCCEEDED if outcome.ok else DeliveryStatus.FAILED
            delivery.next_attempt_at, delivery.finished_at = None, now
        else:
            delivery.next_attempt_at = now + backoff(delivery.attempts, settings.webhook_retry_base_s)
        db.commit()
    if not outcome.ok:
        log.warning("webhook delivery %s: %s (attempt %d)", delivery_id, error, delivery.attempts)


class Deliverer:
    """Sends due deliveries on a daemon thread from start() to stop(), looking for them every
    ZERASE_WEBHOOK_POLL_INTERVAL_S and whenever a send ends."""

    def __init__(self, settings: Settings) -> None:
        TargetPolicy.of(settings)  # a malformed allowlist fails when the app is made, not on the thread
        self.settings = settings
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    def start(self) -> None:
        self._stopping.clear()
        self._ready.clear()
        self._thread = threading.Thread(target=_run_quietly, args=(self._serve(),), name="webhook-deliverer",
                                        daemon=True)
        self._thread.start()
        self._ready.wait(timeout=10)

    def stop(self) -> None:
        self._stopping.set()
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)
        if self._thread is not None:
            self._thread.join(timeout=self.settings.webhook_timeout_s + 5)  # at most the sends under way
            self._thread = None

    async def _serve(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        async with http_client(self.settings) as http:
            pump = _Pump(self.settings, http)
            while not self._stopping.is_set():
                try:
                    await pump.fill()
                    await pump.settle(self.settings.webhook_poll_interval_s, self._wake)
                except Exception:  # the database is down, say: try again next interval
                    log.exception("webhook delivery pass failed")
                    await asyncio.sleep(self.settings.webhook_poll_interval_s)
            await pump.drain()


def _run_quietly(coroutine: Coroutine[Any, Any, None]) -> None:
    try:
        _run(coroutine)
    except Exception:
        log.exception("the webhook deliverer stopped")
