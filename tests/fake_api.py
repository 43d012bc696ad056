"""A fake external API on loopback for the governance specs: it counts requests,
tracks the most it ever had in flight, records who called in what order, and
fails the first ``fail`` requests with 429 when told to.

It runs in a thread of the test process (``serve_asgi``), so that calls from
this process and from child processes all meet it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support import serve_asgi


@dataclass
class FakeAPI:
    """Counts requests, tracks the most in flight, and fails the first ``fail`` with 429.

    A request may say who it is for (header ``x-owner``) and how long to take (``?delay=`` seconds)."""

    delay_s: float = 0.05
    fail: int = 0
    retry_after_ms: int = 100
    in_flight: int = 0
    max_in_flight: int = 0
    calls: list[float] = field(default_factory=list)
    owners: list[str] = field(default_factory=list)  # who called, in the order the calls began
    called: threading.Event = field(default_factory=threading.Event)  # the fake runs on another thread
    held: str | None = None  # the first call for this owner is answered only once ``released`` is set
    released: threading.Event = field(default_factory=threading.Event)

    async def handle(self, request: Request) -> JSONResponse:
        owner = request.headers.get("x-owner", "")
        self.calls.append(time.monotonic())
        self.owners.append(owner)
        self.called.set()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if owner == self.held and self.owners.count(owner) == 1:
                await asyncio.to_thread(self.released.wait, 60)  # set by the test's thread
            await asyncio.sleep(float(request.query_params.get("delay", self.delay_s)))
        finally:
            self.in_flight -= 1
        if self.fail > 0:
            self.fail -= 1
            return JSONResponse({"error": "slow down"}, 429, headers={"retry-after-ms": str(self.retry_after_ms)})
        return JSONResponse({"ok": True})


@contextlib.contextmanager
def serve_fake_api(api: FakeAPI) -> Iterator[str]:
    """Serve ``api``; yields the URL to POST calls to."""
    with serve_asgi(Starlette(routes=[Route("/call", api.handle, methods=["POST"])])) as url:
        yield f"{url}/call"
