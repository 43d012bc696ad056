"""Real servers for tests: uvicorn in a thread of the test process, or a whole
``runyard`` process that a test may kill."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import uvicorn
from starlette.types import ASGIApp

from runyard import Runyard, Settings

REPO = Path(__file__).resolve().parent.parent
STOP_S = 10  # how long a thread's server may wait for its open connections when it stops


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_app(**settings: object) -> Runyard:
    """The demo pipelines plus the test pipelines, on the given settings."""
    from tests.apps import build_app

    return build_app(Settings(**settings))  # type: ignore[arg-type]


def serve_in_thread(app: Runyard) -> contextlib.AbstractContextManager[str]:
    """Serve ``app`` with uvicorn on a free loopback port; yields the base URL."""
    return serve_asgi(app.http())


@contextlib.contextmanager
def serve_asgi(asgi: ASGIApp, *, http: type[asyncio.Protocol] | str = "auto") -> Iterator[str]:
    """Serve any ASGI app (a fake external API, say) like ``serve_in_thread``;
    ``http``: uvicorn's HTTP protocol (runyard's own, ``protected_protocol``, say)."""
    port = free_port()
    # uvicorn's 5 s keep-alive equals httpx's own expiry: a request reusing a
    # connection as the server closes it was reset under load (a ReadError in the
    # chat example's 100 users). Real providers keep idle connections longer than
    # their clients do, so here the client ends them; runyard's own protocol
    # answers such a request instead (tests/http/test_keep_alive.py).
    config = uvicorn.Config(
        asgi,
        host="127.0.0.1",
        port=port,
        http=http,
        log_level="warning",
        lifespan="on",
        timeout_keep_alive=75,
        timeout_graceful_shutdown=STOP_S,  # a connection left open must not hold the stop past the join
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=STOP_S * 3)
        if thread.is_alive():  # else its loop closes later, and its warnings fail some other test
            raise RuntimeError(f"the test server at {url} did not stop within {STOP_S * 3} s")


class ServerProcess:
    """``runyard serve tests.apps:app`` (or ``app``, as module:attribute) in a
    child process, killable at will; its output goes to ``output`` if given."""

    def __init__(
        self, env: dict[str, str], port: int | None = None, app: str | None = None, output: Path | None = None
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, "RUNYARD_PORT": str(self.port), "RUNYARD_HOST": "127.0.0.1"}
        self.command = [sys.executable, "-m", *(["runyard", "serve", app] if app else ["tests.serve"])]
        self.output = output
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        return self.spawn().ready()

    def spawn(self) -> ServerProcess:
        """Start the process without waiting for it (``ready`` waits)."""
        if self.output is None:
            self.proc = subprocess.Popen(self.command, cwd=REPO, env=self.env)
        else:
            with self.output.open("ab") as out:
                self.proc = subprocess.Popen(self.command, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        return self

    def ready(self, within_s: float = 30) -> ServerProcess:
        """Once the spawned process answers ``/readyz``."""
        assert self.proc is not None
        deadline = time.monotonic() + within_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become ready")
            time.sleep(0.05)

    def kill(self) -> None:
        """``kill -9``: no shutdown code runs."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
