"""The load: one simulated user per session, its runs one after another, each stream read
and resumed; all of them started together."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

from runyard.cli_view import compact
from runyard.client import APIError, api_error
from runyard.events.sse import SSEParser
from runyard.loadtest.checks import RunCheck, Tally, _field
from runyard.loadtest.config import PIPELINE, Config
from runyard.loadtest.report import report

RECONNECTS = 5  # consecutive reconnects without a new event before a stream counts as lost
REQUEST_RETRIES = 2  # for a pooled connection the server closed just as it was reused
END_GRACE_S = 5.0  # how long a stream may stay open after its end event (a busy client reads late)


# -- one simulated user ------------------------------------------------------------


class _Abort(Exception):
    """A violation after which this run cannot be checked further."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.detail = kind, detail


class _Dropped(Exception):
    """A stream that failed in a way worth reconnecting for (a 5xx answer)."""


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _run_path(run_id: str, *rest: str) -> str:
    return "/".join(["/v1/runs", quote(run_id, safe=""), *rest])


class _Session:
    """One user: its own owner and marker, its runs one after another in one session."""

    def __init__(self, index: int, config: Config, http: httpx.AsyncClient, tally: Tally) -> None:
        self.index, self.config, self.http, self.tally = index, config, http, tally
        self.marker = f"{config.prefix}-s{index}"
        self.session_id: str | None = None
        self.current: RunCheck | None = None
        self._created = 0

    async def run(self, stop_at: float | None) -> None:
        while await self._one_run():
            if stop_at is None or time.monotonic() >= stop_at:
                return

    def timed_out(self, deadline_s: float) -> None:
        if self.current is not None and not self.current.ended:
            self.current.violate("timeout", f"no end event within {deadline_s:g} s (last seq {self.current.seq})")

    async def _one_run(self) -> bool:
        """Create, follow and verify one run; False when this session cannot go on."""
        check = self.current = RunCheck(self.index, self.marker, self.config.events, self.tally)
        try:
            await self._create(check)
            await self._follow(check)
            assert check.run_id is not None
            check.verify(await self._call("GET", _run_path(check.run_id)))
        except _Abort as exc:
            check.violate(exc.kind, exc.detail)
            return False
        finally:
            self.tally.finished += 1
        return True

    async def _create(self, check: RunCheck) -> None:
        run_input = {"marker": self.marker, "count": self.config.events, "interval_ms": self.config.interval_ms}
        body: dict[str, Any] = {"pipeline": PIPELINE, "input": run_input}
        if self.session_id is not None:
            body["session_id"] = self.session_id
        # A create retried after a dropped connection must not make a second run.
        key, self._created = f"{self.marker}-{self._created}", self._created + 1
        began = time.perf_counter()
        snapshot = await self._call("POST", "/v1/runs", body, {"Idempotency-Key": key})
        self.tally.create_ms.append((time.perf_counter() - began) * 1000.0)
        self.tally.runs += 1
        check.run_id, check.session_id = _text(snapshot, "run_id"), _text(snapshot, "session_id")
        if self.session_id is None:
            self.session_id = check.session_id
        elif check.session_id != self.session_id:
            check.violate("session_mismatch", f"created in session {check.session_id}, not {self.session_id}")

    async def _call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        what = f"{method} {path}"
        for attempt in range(REQUEST_RETRIES + 1):
            try:
                response = await self.http.request(method, path, json=body, headers=headers)
                break
            except httpx.TransportError as exc:
                if attempt == REQUEST_RETRIES:
                    raise _Abort("transport_error", f"{what}: {_describe(exc)}") from exc
                self.tally.retries += 1
                await asyncio.sleep(0.05 * (attempt + 1))
        if response.is_error:
            raise _Abort("http_error", f"{what}: {api_error(response)}")
        try:
            value = response.json()
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise _Abort("bad_response", f"{what}: not a JSON object: {response.text[:120]!r}")
        return value

    async def _follow(self, check: RunCheck) -> None:
        """Read the stream to its end, reconnecting after the last seq seen when it drops."""
        failures = 0
        while True:
            before = check.seq
            try:
                await self._read(check)
                if check.ended:
                    return
                problem = "the server closed the stream before its end event"
            except (httpx.TransportError, _Dropped) as exc:
                if check.ended:  # dropped after the end: nothing was lost
                    return
                problem = _describe(exc)
            failures = 1 if check.seq > before else failures + 1
            if failures > RECONNECTS:
                raise _Abort("stream_lost", f"no end event after seq {check.seq}: {problem}")
            self.tally.reconnects += 1
            await asyncio.sleep(min(1.0, 0.05 * 2 ** (failures - 1)))

    async def _read(self, check: RunCheck) -> None:
        assert check.run_id is not None
        path = _run_path(check.run_id, "stream")
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(check.seq)}
        async with self.http.stream("GET", path, headers=headers) as response:
            if response.is_error:
                await response.aread()
                error = api_error(response)
                if error.status >= 500:
                    raise _Dropped(str(error))
                raise _Abort("http_error", f"GET {path}: {error}")
            parser = SSEParser()
            try:
                # No deadline until the end event; then the server has END_GRACE_S to close.
                async with asyncio.timeout(None) as grace:
                    async for line in response.aiter_lines():
                        frame = parser.feed(line)
                        if frame is None:
                            continue
                        check.frame(frame, time.time())
                        if check.ended and grace.when() is None:
                            grace.reschedule(asyncio.get_running_loop().time() + END_GRACE_S)
            except TimeoutError:
                check.violate("open_after_end", f"still open {END_GRACE_S:g} s after the end event")


def _text(snapshot: dict[str, Any], key: str) -> str:
    value = snapshot.get(key)
    if not isinstance(value, str):
        raise _Abort("bad_response", f"a run snapshot without a {key}: {compact(snapshot)[:120]}")
    return value


# -- the whole test ------------------------------------------------------------------


WATCH_EVERY_S = 0.25  # how often ``watch`` sees the tally: a live display, not a measurement


async def run(config: Config, watch: Callable[[Tally, float], None] | None = None) -> dict[str, Any]:
    """Run the load test; its report, the ``--json`` document. ``watch(tally, elapsed_s)``
    is called every ``WATCH_EVERY_S`` while it runs, and once at the end."""
    _allow_open_files(config.sessions)
    tally = Tally()
    # Built once: httpx would load the CA certificates again for every client.
    tls = ssl.create_default_context()
    async with contextlib.AsyncExitStack() as clients:
        sessions = []
        for i in range(config.sessions):
            http = await clients.enter_async_context(_http_client(config, i, tls))
            sessions.append(_Session(i, config, http, tally))
        await _preflight(sessions[0].http, config)
        began = time.monotonic()
        stop_at = None if config.duration_s is None else began + config.duration_s
        tasks = [asyncio.create_task(session.run(stop_at)) for session in sessions]
        watcher = asyncio.create_task(_watch(watch, tally, began)) if watch is not None else None
        _, pending = await asyncio.wait(tasks, timeout=config.deadline_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        elapsed = time.monotonic() - began
        if watcher is not None and watch is not None:
            watcher.cancel()
            watch(tally, elapsed)
        for session, task in zip(sessions, tasks, strict=True):
            if task in pending:
                session.timed_out(config.deadline_s)
            else:
                task.result()  # a bug of this module should show, not hide among the violations
    return report(config, tally, elapsed)


async def _watch(watch: Callable[[Tally, float], None], tally: Tally, began: float) -> None:
    while True:
        watch(tally, time.monotonic() - began)
        await asyncio.sleep(WATCH_EVERY_S)


def _http_client(config: Config, session: int, tls: ssl.SSLContext) -> httpx.AsyncClient:
    """A session's own client, as a real user has: one pool shared by hundreds of streams
    costs more CPU than the streams, since httpx scans the whole pool on every request."""
    headers = {"User-Agent": "runyard-loadtest"}
    if owner := config.owner(session):
        headers["X-Client-Id"] = owner
    if config.token:
        headers["Authorization"] = f"Bearer {config.token}"
    # Idle connections are dropped before uvicorn's 5 s keep-alive ends, so that a request
    # is not sent on a connection the server is closing.
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=2, keepalive_expiry=3.0)
    # The read timeout outlasts the server's 15 s heartbeat, so quiet streams live on.
    timeout = httpx.Timeout(60.0, connect=10.0)
    return httpx.AsyncClient(base_url=config.url, headers=headers, limits=limits, timeout=timeout, verify=tls)


async def _preflight(http: httpx.AsyncClient, config: Config) -> None:
    """A server that cannot take the test fails it once, as a usage error, not N times."""
    response = await http.get("/v1/pipelines")
    if response.is_error:
        raise api_error(response)
    listed = _field(response.json(), "pipelines")
    names = {_field(item, "name") for item in listed} if isinstance(listed, list) else set()
    if PIPELINE not in names:
        message = f"the server at {config.url} has no {PIPELINE} pipeline (runyard demo serves one)"
        raise APIError(404, "pipeline_not_found", message)


def _allow_open_files(sessions: int) -> None:
    """Each session holds a socket, and the usual soft limit of 1,024 files would cap N below that."""
    try:
        import resource
    except ImportError:  # not POSIX: nothing to raise
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = sessions + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        allowed = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (allowed, hard))
