"""Request limits checked before a route runs: the headers' size, the body's size and its media type.

A body is read into memory to be parsed, so its size is capped (413) before that happens; a body
that is not JSON is refused as such (415, naming Content-Type) rather than reported as a malformed
object. Both answers are problem+json like every other error.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import problem

BODY_METHODS = {"POST", "PUT", "PATCH"}
FORM_MEDIA = b"application/x-www-form-urlencoded"
# No request here needs more. The HTTP server must let such headers through to be answered here:
# `zerase serve` gives h11 SERVER_HEADER_BYTES (h11's own default, 16 KiB, would cut some requests over it
# off with a bare reset, depending on how they arrive over TCP); beyond that the server resets the
# connection itself.
MAX_HEADER_BYTES = 32 * 1024
SERVER_HEADER_BYTES = 4 * MAX_HEADER_BYTES
# How long `zerase serve` keeps an idle connection open. uvicorn's default, 5 s, races clients that reuse a
# pooled connection after a pause: the server closes it as the next request goes out, and that request
# (a POST is not retried) fails with "server disconnected". Longer than a load balancer's usual 60 s idle
# timeout, so the client side is the one to close first.
SERVER_KEEP_ALIVE_S = 75


class RequestLimits:
    """Pure ASGI middleware. A declared Content-Length over `max_body_bytes` is refused unread; a body
    without one (chunked) is read up to the limit and replayed to the app."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, form_prefix: str | None = None) -> None:
        # Under `form_prefix` (the console) HTML forms post url-encoded bodies; everywhere else only JSON.
        self.app, self.max_body_bytes, self.form_prefix = app, max_body_bytes, form_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and sum(len(k) + len(v) for k, v in scope["headers"]) > MAX_HEADER_BYTES:
            response = problem(431, f"the request's headers are over the {MAX_HEADER_BYTES} bytes accepted",
                               code="headers_too_large")
            await response(scope, receive, send)
            return
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await self._too_large(scope, receive, send)
            return
        if length is None and b"transfer-encoding" in headers:
            messages, size = [], 0
            while True:
                message = await receive()
                messages.append(message)
                size += len(message.get("body", b""))
                if size > self.max_body_bytes:
                    await self._too_large(scope, receive, send)
                    return
                if message["type"] != "http.request" or not message.get("more_body"):
                    break
            receive = _replay(messages, receive)
        media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if (length not in (None, b"0") or b"transfer-encoding" in headers) and not (
                media == b"application/json" or media.endswith(b"+json") or (
                    media == FORM_MEDIA and self.form_prefix and scope["path"].startswith(self.form_prefix))):
            shown = media.decode("latin-1") or "none"
            response = problem(415, f"the body must be JSON (Content-Type: application/json), not {shown}",
                               code="unsupported_media_type", errors=[
                                   {"field": "Content-Type", "pointer": "header:Content-Type",
                                    "detail": "expected application/json"}])
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(413, f"the body is over the {self.max_body_bytes} bytes accepted",
                           code="content_too_large", errors=[{"field": "body", "pointer": "#/", "detail": "too large"}])
        await response(scope, receive, send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed
