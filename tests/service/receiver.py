"""A webhook receiver on loopback for the tests: the webhook tests and the console's browser test."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TRICKLE_FOR_S = 60.0  # how long a trickling receiver keeps the answer coming, unless the sender hangs up


def hung_up(conn: socket.socket, wait_s: float) -> bool:
    """Whether the sender closed `conn` (now, or within `wait_s`): its whole request has been read, so
    anything readable is the end of the stream."""
    try:
        if not select.select([conn], [], [], wait_s)[0]:
            return False
        return conn.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):  # reset, or already closed on this side
        return True


class Receiver:
    """A webhook endpoint on 127.0.0.1: answers each POST with the next of `statuses` (the last one
    repeats), after `hang_s`, or one byte of the answer every `trickle_s` for a minute; keeps every
    request's headers and body. `hung_up` lists the webhook-ids whose sender closed the connection before
    the answer was complete; `overlaps` those that arrived while a connection with the same id was open."""

    def __init__(self, statuses: tuple[int, ...] = (200,), hang_s: float = 0.0,
                 headers: dict[str, str] | None = None, trickle_s: float | None = None) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.hung_up: list[str] = []
        self.overlaps: list[str] = []
        self._open: dict[str, list[socket.socket]] = {}
        self._statuses, self._lock = list(statuses), threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                webhook_id = self.headers.get("webhook-id", "")
                with receiver._lock:
                    receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    status = receiver._statuses.pop(0) if len(receiver._statuses) > 1 else receiver._statuses[0]
                    # An earlier connection counts as open unless its end has reached this side (no race: a
                    # sender closes one before it opens the next).
                    earlier = [c for c in receiver._open.get(webhook_id, []) if not hung_up(c, 0)]
                    if earlier:
                        receiver.overlaps.append(webhook_id)
                    receiver._open[webhook_id] = [*earlier, self.connection]
                try:
                    answered = self._trickle(status) if trickle_s else self._answer(status)
                finally:
                    with receiver._lock:
                        if self.connection in receiver._open[webhook_id]:
                            receiver._open[webhook_id].remove(self.connection)
                if not answered:
                    with receiver._lock:
                        receiver.hung_up.append(webhook_id)
                    self.close_connection = True

            def _answer(self, status: int) -> bool:
                if hang_s and hung_up(self.connection, hang_s):
                    return False
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()
                return True

            def _trickle(self, status: int) -> bool:
                assert trickle_s is not None
                answer = f"HTTP/1.1 {status} OK\r\nx-padding: ".encode()
                ends = time.monotonic() + TRICKLE_FOR_S
                try:
                    while time.monotonic() < ends:
                        if hung_up(self.connection, trickle_s):
                            return False
                        self.wfile.write(answer[:1] or b"x")
                        answer = answer[1:]
                    self.wfile.write(b"\r\ncontent-length: 0\r\n\r\n")
                except OSError:  # hung up between the check and the write
                    return False
                return True

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def open_connections(self) -> int:
        with self._lock:
            return sum(len(conns) for conns in self._open.values())

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
