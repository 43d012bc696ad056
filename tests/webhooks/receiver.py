"""A webhook receiver on 127.0.0.1 for the tests: it records every delivery (raw
body and headers), fails the first ``failures`` requests with 503, and notes any
delivery of a run that arrives while another of the same run is in flight."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support import free_port


@dataclass(frozen=True)
class Received:
    run_id: str
    body: bytes
    signature: str | None
    host: str | None


class Receiver:
    def __init__(self, port: int | None = None, *, failures: int = 0, hold_s: float = 0.0, answer: int = 204) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.failures = failures
        self.hold_s = hold_s  # how long each request is held before its answer
        self.answer = answer  # the status of the answers that are not failures
        self.requests = 0  # every request, failed ones included
        self.delivered: list[Received] = []  # the requests answered 2xx
        self.overlaps: list[str] = []  # run ids delivered twice at the same moment
        self._in_flight: Counter[str] = Counter()
        self._changed = threading.Condition()

    def handle(self, handler: BaseHTTPRequestHandler) -> int:
        body = handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
        run_id = handler.headers.get("Runyard-Run-Id", "")
        with self._changed:
            self.requests += 1
            fail = self.requests <= self.failures
            self._in_flight[run_id] += 1
            if self._in_flight[run_id] > 1:
                self.overlaps.append(run_id)
            self._changed.notify_all()  # a request arrived (``wait_for_requests``)
        time.sleep(self.hold_s)
        with self._changed:
            self._in_flight[run_id] -= 1
            if not fail and self.answer < 300:
                self.delivered.append(
                    Received(run_id, body, handler.headers.get("Runyard-Signature"), handler.headers.get("Host"))
                )
            self._changed.notify_all()
        return 503 if fail else self.answer

    def wait_for(self, delivered: int, timeout_s: float = 30) -> list[Received]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.delivered) >= delivered, timeout_s), (
                f"{len(self.delivered)} of {delivered} deliveries after {timeout_s} s ({self.requests} requests)"
            )
            return list(self.delivered)

    def wait_for_requests(self, requests: int, timeout_s: float = 30) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: self.requests >= requests, timeout_s), self.requests

    @contextmanager
    def running(self) -> Iterator[Receiver]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                status = receiver.handle(self)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.send_header("Location", receiver.url)  # followed, a 3xx would come back here
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
