"""Pure ASGI middleware (no per-request task or body buffering on the hot path)."""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
import time

from prometheus_client import Counter
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runyard.http.errors import error_response
from runyard.observability import metrics
from runyard.observability.logs import REQUEST_ID

access_log = logging.getLogger("runyard.http")
# a caller's own X-Request-ID is kept (a proxy's, say) when it is short and plain
CALLERS_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


# The ``send`` the outermost middleware was given, for a stream's body chunks
# (``http.streaming``): only the response's start and end need every layer.
OUTER_SEND = "runyard.outer_send"


class RequestIds:
    """Gives every request an id: the caller's ``X-Request-ID`` or a new one. It
    is on every log line written while the request is handled (a contextvar),
    on the access line written when it ends, and echoed as ``X-Request-ID``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        token = REQUEST_ID.set(request_id)
        scope[OUTER_SEND] = send
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            access_log.info(
                "%s %s %d",
                scope["method"],
                scope["path"],
                status,
                extra={"status": status, "duration_ms": round((time.perf_counter() - started) * 1000, 2)},
            )
            REQUEST_ID.reset(token)
            # the scope holds ``send``, which holds the server's request cycle, which
            # holds the scope: a cycle left for the garbage collector (whose passes
            # stopped the process 15-40 ms while 1,000 streams opened), unless cut here
            scope.pop(OUTER_SEND, None)


def request_id_of(scope: Scope) -> str:
    """The caller's ``X-Request-ID`` when it is short and plain, else a new id."""
    for name, value in scope["headers"]:
        if name == b"x-request-id" and CALLERS_REQUEST_ID.fullmatch(value):
            return bytes(value).decode()
    return new_request_id()


class _RequestIds:
    """New request ids: this process's random prefix and a counter, 16 hex digits.
    An id only has to be unique, not secret: ``secrets.token_hex`` read the
    kernel's random source once per request, and that call hands the GIL to the
    store's writer thread (2.8 % of the event loop's samples while 1,000 streams
    opened, ``bench/README.md``, "A fifteenth round")."""

    def __init__(self) -> None:
        self._prefix = ""
        self._counter = itertools.count()
        self.reseed()

    def reseed(self) -> None:
        """A new prefix: a forked child must not repeat its parent's ids."""
        self._prefix = secrets.token_hex(4)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFF:08x}"


new_request_id = _RequestIds()
os.register_at_fork(after_in_child=new_request_id.reseed)


class RequestMetrics:
    """Counts answered requests by route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # each (route, status)'s counter, looked up once: ``labels`` takes a lock
        # and builds its key on every call (2.7 -> 0.8 µs a request)
        self._counters: dict[tuple[str, int], Counter] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_counted(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                # counted when the status is sent, not when a long stream ends
                started = True
                self._count(scope, message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            if not started:
                self._count(scope, 500)

    def _count(self, scope: Scope, status: int) -> None:
        key = (getattr(scope.get("route"), "path", "unmatched"), status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = metrics.HTTP_REQUESTS_TOTAL.labels(key[0], str(status))
        counter.inc()


class JSONBodies:
    """Every request body of this API is JSON (the contract says so), whatever
    Content-Type the client sent: FastAPI then parses each one as JSON, and a
    body that is not JSON gets 400 ``invalid_json`` instead of a confusing 422."""

    JSON = (b"content-type", b"application/json")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            headers = [h for h in scope["headers"] if h[0] != b"content-type"]
            headers.append(self.JSON)
            scope["headers"] = headers  # in place: outer middleware reads the matched route from it
        await self.app(scope, receive, send)


class BodyLimit:
    """413 ``payload_too_large`` for a body over ``max_bytes``, before it is parsed:
    at once when ``Content-Length`` says so, else as soon as the bytes read pass
    the limit. (Starlette's own limiter answers in plain text, not the envelope.)"""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            response = error_response(413, "payload_too_large", f"the body exceeds {self.max_bytes} bytes")
            await response(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                # an HTTPException: FastAPI re-raises it from body parsing instead of making it a 400
                raise HTTPException(413, f"the body exceeds {self.max_bytes} bytes")
            return message

        await self.app(scope, counted_receive, send)
