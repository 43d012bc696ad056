"""Connection-level defences under the ASGI app: a read deadline and a connection cap.

uvicorn (0.55, httptools protocol) starts no timer when a connection opens: its
only timer is keep-alive, armed once a response has ended and cancelled by the
next byte received. A connection that sends nothing, or half a request's
headers a byte at a time, was therefore held forever (1,500 such connections
were all still open after 40 s). Its ``limit_concurrency`` counts open
connections but answers in plain text. ``ProtectedHttpProtocol`` adds both
here, on uvicorn's own protocol, so the parser, flow control and keep-alive
stay uvicorn's:

- **read deadline**: a request's line, headers and body must all arrive within
  ``read_timeout_s`` of its first byte (or of the connection opening, for a
  client that sends nothing). Past it the connection is closed, after a 408 if
  part of the headers had come. Once a request is read the deadline is off: a
  stream may stay open for hours.
- **connection cap**: past ``max_connections`` open connections, a request gets
  503 ``server_busy`` (the JSON envelope, ``Retry-After``, ``Connection: close``)
  instead of reaching the app. ``/healthz`` and ``/metrics`` are always served,
  so a full process is neither restarted by its liveness probe nor blind;
  ``/readyz`` is capped like the rest, so a load balancer stops sending it work.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import orjson
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

ALWAYS_SERVED = frozenset({b"/healthz", b"/metrics"})
BUSY_RETRY_AFTER_S = 5


class ProtectedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a read deadline and a connection cap
    (make one for given limits with ``protected_protocol``)."""

    read_timeout_s: ClassVar[float] = 10.0
    max_connections: ClassVar[int] = 20_000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None
        self._headers_read = False
        self._bytes_read = False
        self._served_app = self.app

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_reading()

    def data_received(self, data: bytes) -> None:
        if self._read_deadline is None:
            self._start_reading()  # the first byte of a new request (keep-alive or pipelined)
        self._bytes_read = True
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._headers_read = True
        over_cap = len(self.connections) > self.max_connections
        self.app = refuse_busy if over_cap and self._capped() else self._served_app
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._stop_reading()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_reading()
        super().connection_lost(exc)

    def _capped(self) -> bool:
        return self.url.partition(b"?")[0] not in ALWAYS_SERVED

    def _start_reading(self) -> None:
        self._headers_read = self._bytes_read = False
        self._read_deadline = self.loop.call_later(self.read_timeout_s, self._read_timed_out)

    def _stop_reading(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        answering = self.cycle is not None and not self.cycle.response_complete
        if self._bytes_read and not self._headers_read and not answering:
            # nobody is answering on this connection: say why it ends
            body = error_body("request_timeout", f"the request was not received within {self.read_timeout_s:g} s")
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
            )
        self.transport.close()


def error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


async def refuse_busy(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer past the connection cap, without entering the app."""
    body = error_body("server_busy", "this server has too many open connections; retry later")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(BUSY_RETRY_AFTER_S).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def protected_protocol(read_timeout_s: float, max_connections: int) -> type[ProtectedHttpProtocol]:
    """The protocol class to give ``uvicorn.Config(http=...)`` for these limits."""
    return type(
        "ProtectedHttpProtocol",
        (ProtectedHttpProtocol,),
        {"read_timeout_s": read_timeout_s, "max_connections": max_connections},
    )
