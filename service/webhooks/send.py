"""One attempt at a delivery: a signed POST (Standard Webhooks) under a wall-clock deadline.

The deadline (ZERASE_WEBHOOK_TIMEOUT_S) bounds the whole attempt, DNS to the answer's status line: httpx's
own timeouts are per operation, so a receiver that trickles a byte at a time would hold a send for as long
as it liked. Past the deadline the request is cancelled and its connection closed, so a send never outlives
the claim (deliver.py's lease) and another process never sends the same message while this one is open.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from service.core.settings import Settings
from service.core.tables import utcnow
from service.webhooks.targets import TargetPolicy, TargetRefused, TargetUnresolved, resolve

USER_AGENT = "zerase-webhooks/0.1"


@dataclass(frozen=True)
class Claimed:
    """A delivery this process has claimed, with what sending it needs."""

    id: str
    subscription_id: str
    url: str
    secret: str
    payload: dict[str, Any]
    subscription_live: bool


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    duration_ms: int
    final: bool = False  # no retry, whatever attempts are left

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def http_client(settings: Settings) -> httpx.AsyncClient:
    """No redirects, no proxies from the environment (they would bypass the address check), and no kept
    connections: each send connects to the address it has just checked."""
    return httpx.AsyncClient(timeout=settings.webhook_timeout_s, follow_redirects=False, trust_env=False,
                             limits=httpx.Limits(max_keepalive_connections=0))


async def attempt(http: httpx.AsyncClient, claimed: Claimed, policy: TargetPolicy, deadline_s: float) -> Outcome:
    """Send `claimed` once, giving up after `deadline_s` in all; what came of it (never raises for the
    receiver's sake; cancelling the task aborts the request)."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(deadline_s):
            outcome = await _post(http, claimed, policy)
    except TimeoutError:
        outcome = Outcome(None, f"timed out after {deadline_s:g} s (ZERASE_WEBHOOK_TIMEOUT_S)", 0)
    took = int((time.monotonic() - started) * 1000)
    return Outcome(outcome.status_code, outcome.error, took, outcome.final)


async def _post(http: httpx.AsyncClient, claimed: Claimed, policy: TargetPolicy) -> Outcome:
    try:
        # Again at each send: DNS may have changed since the subscription was made. In a thread, so the
        # deadline covers a slow resolver too.
        target = await asyncio.to_thread(resolve, claimed.url, policy)
    except TargetRefused as exc:
        return Outcome(None, f"refused: {exc}", 0, final=True)
    except TargetUnresolved as exc:
        return Outcome(None, str(exc), 0)
    body = json.dumps(claimed.payload, separators=(",", ":"), ensure_ascii=False)
    now = utcnow()
    headers = {"webhook-id": claimed.id, "webhook-timestamp": str(int(now.timestamp())),
               "webhook-signature": Webhook(claimed.secret).sign(claimed.id, now, body),
               "content-type": "application/json", "user-agent": USER_AGENT, "host": target.host_header}
    extensions = {"sni_hostname": target.sni} if target.sni else None
    try:
        # Streamed and never read: the status is all that counts, and a large answer costs nothing.
        async with http.stream("POST", target.connect_url, content=body.encode(), headers=headers,
                               extensions=extensions) as response:
            code = response.status_code
            location = response.headers.get("location")
    except httpx.TimeoutException:
        return Outcome(None, f"timed out (ZERASE_WEBHOOK_TIMEOUT_S={http.timeout.read})", 0)
    except httpx.HTTPError as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, 0)
    if 200 <= code < 300:
        return Outcome(code, None, 0)
    if 300 <= code < 400:
        return Outcome(code, f"HTTP {code}: redirects are not followed (Location: {location})", 0)
    return Outcome(code, f"HTTP {code}", 0)
