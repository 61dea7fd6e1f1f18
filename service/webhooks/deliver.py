"""The deliverer: sends due deliveries, signed per Standard Webhooks, and retries the failed ones.

`deliver_due` is one pass (tests call it directly); `Deliverer` runs passes on a thread of the API
process. Each delivery is claimed on its own before it is sent, by pushing its due time past the
longest a send can take (PostgreSQL: FOR UPDATE SKIP LOCKED, so two API processes never claim the
same one; SQLite: under the write lock). A process that dies mid-send leaves a claim that expires,
and the delivery is sent again: at least once, with the same `webhook-id` for the receiver to
deduplicate by.

A send that is not a 2xx (a redirect included: none is followed), times out or cannot connect is
tried again after base, 2x base, 4x base... (ZERASE_WEBHOOK_RETRY_BASE_S) until it has had
ZERASE_WEBHOOK_MAX_ATTEMPTS tries. A target the allowlist refuses now fails at once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks.webhooks import Webhook

from service.core.db import serialize_writes, session_factory
from service.core.settings import Settings
from service.core.tables import utcnow
from service.webhooks.contract import MAX_BACKOFF_S, MAX_ERROR, DeliveryStatus
from service.webhooks.models import Attempt, Delivery, Subscription
from service.webhooks.targets import TargetPolicy, TargetRefused, TargetUnresolved, resolve

log = logging.getLogger(__name__)
USER_AGENT = "zerase-webhooks/0.1"


@dataclass(frozen=True)
class _Claimed:
    id: str
    url: str
    secret: str
    payload: dict[str, Any]
    subscription_live: bool


@dataclass(frozen=True)
class _Outcome:
    status_code: int | None
    error: str | None
    duration_ms: int
    final: bool = False  # no retry, whatever attempts are left

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def http_client(settings: Settings) -> httpx.Client:
    """No redirects, no proxies from the environment (they would bypass the address check), and no kept
    connections: each send connects to the address it has just checked."""
    return httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False, trust_env=False,
                        limits=httpx.Limits(max_keepalive_connections=0))


def deliver_due(settings: Settings, *, limit: int = 100, http: httpx.Client | None = None) -> int:
    """Send the deliveries due now, one claim at a time, at most `limit`: the number sent (or refused)."""
    sessions = session_factory(settings.database_url)
    policy = TargetPolicy.of(settings)
    # Longer than a send can take (DNS, connect, write, read), so a claim never expires mid-send.
    lease = timedelta(seconds=4 * settings.webhook_timeout_s + 30)
    owned = http is None
    http = http or http_client(settings)
    done = 0
    try:
        while done < limit:
            claimed = _claim(sessions, lease)
            if claimed is None:
                break
            outcome = _send(http, claimed, policy) if claimed.subscription_live else \
                _Outcome(None, "the webhook was deleted", 0, final=True)
            _record(sessions, claimed.id, outcome, settings)
            done += 1
    finally:
        if owned:
            http.close()
    return done


def _claim(sessions: sessionmaker[Session], lease: timedelta) -> _Claimed | None:
    now = utcnow()
    due = (Delivery.status == DeliveryStatus.PENDING, Delivery.next_attempt_at <= now)
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
        claimed = _Claimed(delivery.id, subscription.url, subscription.secret, delivery.payload,
                           subscription.deleted_at is None)
        db.commit()
        return claimed


def _send(http: httpx.Client, claimed: _Claimed, policy: TargetPolicy) -> _Outcome:
    """One signed POST of the delivery's payload; what came of it (never raises for the receiver's sake)."""
    started = time.monotonic()

    def took() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        target = resolve(claimed.url, policy)  # again: DNS may have changed since the subscription was made
    except TargetRefused as exc:
        return _Outcome(None, f"refused: {exc}", took(), final=True)
    except TargetUnresolved as exc:
        return _Outcome(None, str(exc), took())
    body = json.dumps(claimed.payload, separators=(",", ":"), ensure_ascii=False)
    now = utcnow()
    headers = {"webhook-id": claimed.id, "webhook-timestamp": str(int(now.timestamp())),
               "webhook-signature": Webhook(claimed.secret).sign(claimed.id, now, body),
               "content-type": "application/json", "user-agent": USER_AGENT, "host": target.host_header}
    extensions = {"sni_hostname": target.sni} if target.sni else None
    try:
        # Streamed and never read: the status is all that counts, and a large answer costs nothing.
        with http.stream("POST", target.connect_url, content=body.encode(), headers=headers,
                         extensions=extensions) as response:
            code = response.status_code
            location = response.headers.get("location")
    except httpx.TimeoutException:
        return _Outcome(None, f"timed out (ZERASE_WEBHOOK_TIMEOUT_S={http.timeout.read})", took())
    except httpx.HTTPError as exc:
        return _Outcome(None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, took())
    if 200 <= code < 300:
        return _Outcome(code, None, took())
    if 300 <= code < 400:
        return _Outcome(code, f"HTTP {code}: redirects are not followed (Location: {location})", took())
    return _Outcome(code, f"HTTP {code}", took())


def backoff(attempts: int, base_s: float) -> timedelta:
    """The wait after the `attempts`-th failed try: base, 2x base, 4x base..., at most a day."""
    return timedelta(seconds=min(base_s * 2 ** (attempts - 1), MAX_BACKOFF_S))


def _record(sessions: sessionmaker[Session], delivery_id: str, outcome: _Outcome, settings: Settings) -> None:
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
    """`deliver_due` every ZERASE_WEBHOOK_POLL_INTERVAL_S on a daemon thread, from start() to stop()."""

    def __init__(self, settings: Settings) -> None:
        TargetPolicy.of(settings)  # a malformed allowlist fails when the app is made, not on the thread
        self.settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="webhook-deliverer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.webhook_timeout_s + 5)  # at most the send under way
            self._thread = None

    def _run(self) -> None:
        with http_client(self.settings) as http:
            while not self._stop.is_set():
                try:
                    # One delivery per call, so stop() waits for one send at most.
                    while deliver_due(self.settings, limit=1, http=http) and not self._stop.is_set():
                        pass
                except Exception:  # the database is down, say: try again next interval
                    log.exception("webhook delivery pass failed")
                self._stop.wait(self.settings.webhook_poll_interval_s)
