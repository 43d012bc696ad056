"""The Python client: runs, sessions, and event streams that resume after drops.

    async with AsyncClient("http://127.0.0.1:8000", client_id="alice") as client:
        run = await client.create("research", {"topic": "tides"})
        async for event in client.stream(run["run_id"]):
            print(event["seq"], event["type"], event["data"])

``Client`` is the same API, blocking. Both build requests and read answers with
the same helpers and resume streams with the same ``_Cursor``; only the I/O differs.

    RunyardError
    ├── APIError       the server answered with the contract's error envelope
    └── StreamLost     a stream could not be resumed within the ``Reconnect`` policy
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

from runyard.errors import RunyardError
from runyard.events.sse import SSEParser, decode_event
from runyard.models import RunStatus
from runyard.retrying import Backoff

DEFAULT_URL = "http://127.0.0.1:8000"
FINISHED = frozenset(status.value for status in RunStatus if status.finished)
Event = dict[str, Any]


class APIError(RunyardError):
    """An error answer: the HTTP ``status`` and the envelope's ``code`` and ``message``."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


class StreamLost(RunyardError):
    """The stream dropped and reconnecting failed for longer than the policy allows."""

    code = "stream_lost"


@dataclass(frozen=True, slots=True)
class Reconnect:
    """How a dropped stream resumes: exponential backoff with jitter, bounded.

    ``attempts`` and ``max_wait_s`` count from the last event received, so a long
    stream that drops now and then never runs out of them.
    """

    attempts: int = 10
    max_wait_s: float = 60.0
    initial_delay_s: float = 0.1
    max_delay_s: float = 5.0
    jitter: float = 0.2

    def delay(self, failures: int) -> float:
        spread = (1 - self.jitter, 1 + self.jitter)
        return Backoff(self.initial_delay_s, self.max_delay_s, spread).delay(failures)


# -- requests and answers, shared by both clients --------------------------------


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str
    params: dict[str, Any] | None = None
    body: Any = None
    headers: dict[str, str] | None = None

    def options(self) -> dict[str, Any]:
        params = {k: v for k, v in (self.params or {}).items() if v is not None}
        return {"params": params or None, "json": self.body, "headers": self.headers}


def _path(*parts: str) -> str:
    return "/v1/" + "/".join(quote(part, safe="") for part in parts)


def _create_request(
    pipeline: str,
    input: Any,
    session_id: str | None,
    metadata: dict[str, Any] | None,
    timeout_s: float | None,
    multitask: str | None,
    idempotency_key: str | None,
) -> _Request:
    body: dict[str, Any] = {"pipeline": pipeline, "input": input}
    extra = {"session_id": session_id, "metadata": metadata, "timeout_s": timeout_s, "multitask": multitask}
    body.update({key: value for key, value in extra.items() if value is not None})
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    return _Request("POST", _path("runs"), body=body, headers=headers)


def _list_runs_request(session_id: str | None, status: str | None, limit: int | None, before: str | None) -> _Request:
    params = {"session_id": session_id, "status": status, "limit": limit, "before": before}
    return _Request("GET", _path("runs"), params=params)


def api_error(response: httpx.Response) -> APIError:
    """The ``APIError`` for an error answer, from its envelope when it has one."""
    code, message = f"http_{response.status_code}", response.reason_phrase or "error"
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        message = response.text[:200] or message
    retry_after = response.headers.get("Retry-After")
    seconds = float(retry_after) if retry_after and retry_after.isdigit() else None
    return APIError(response.status_code, code, message, seconds)


def _answer(response: httpx.Response) -> Any:
    if response.is_error:
        raise api_error(response)
    if response.status_code == 204 or not response.content:
        return None
    return response.json()


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise APIError(200, "invalid_response", f"expected a JSON object, got {type(value).__name__}")
    return value


def _retryable(exc: Exception) -> bool:
    return not isinstance(exc, APIError) or exc.status >= 500


class _Closed(Exception):
    """The server ended a stream before its ``end`` event (a restart, say)."""


_DROPS = (httpx.TransportError, APIError, _Closed)


class _Cursor:
    """One resumable stream's state: the last ``seq`` seen, the reconnect budget, a deadline."""

    def __init__(self, after: int, policy: Reconnect, deadline: float | None) -> None:
        self.seq = after
        self.ended = False
        self._policy = policy
        self._deadline = deadline
        self._failures = 0
        self._failing_since: float | None = None
        self._parser = SSEParser()

    def request(self, run_id: str) -> _Request:
        """The request for the next connection, which starts right after the last event seen."""
        self._parser = SSEParser()
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(self.seq)}
        return _Request("GET", _path("runs", run_id, "stream"), {"after": self.seq}, headers=headers)

    def feed(self, line: str) -> Event | None:
        """The new event this line completes, if any; repeats (``seq`` already seen) are dropped."""
        self._check_deadline()
        frame = self._parser.feed(line)
        event = decode_event(frame) if frame else None
        if event is None or event["seq"] <= self.seq:
            return None
        self.seq, self.ended = event["seq"], event["type"] == "end"
        self._failures, self._failing_since = 0, None
        return event

    def nothing_left(self, snapshot: dict[str, Any]) -> bool:
        """Whether a stream that closed without ``end`` has nothing more to deliver."""
        return snapshot.get("status") in FINISHED and int(snapshot.get("last_seq", 0)) <= self.seq

    def retry_in(self, exc: Exception) -> float:
        """Seconds to wait before reconnecting; raises when the policy or the deadline is spent."""
        now = time.monotonic()
        self._check_deadline(now)
        if self._failing_since is None:
            self._failing_since = now
        self._failures += 1
        policy = self._policy
        if self._failures > policy.attempts or now - self._failing_since > policy.max_wait_s:
            tries = self._failures - 1
            raise StreamLost(f"stream lost after seq {self.seq} and {tries} reconnect attempts: {exc!r}") from exc
        delay = policy.delay(self._failures)
        return delay if self._deadline is None else min(delay, self._deadline - now)

    def timeout(self, connect: float, read: float) -> httpx.Timeout:
        if self._deadline is not None:
            read = max(0.001, min(read, self._deadline - time.monotonic()))
        return httpx.Timeout(connect, read=read)

    def _check_deadline(self, now: float | None = None) -> None:
        if self._deadline is not None and (now or time.monotonic()) >= self._deadline:
            raise TimeoutError(f"the run did not finish in time (last seq {self.seq})")


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


class _Base:
    """What both clients share: options, headers, and how a stream request is built."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        client_id: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        stream_read_timeout: float = 60.0,
        reconnect: Reconnect | None = None,
    ) -> None:
        headers = {"User-Agent": "runyard-client"}
        if client_id:
            headers["X-Client-Id"] = client_id
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http_options: dict[str, Any] = {"base_url": base_url, "headers": headers, "timeout": timeout}
        self._timeout = timeout
        # Longer than the server's heartbeat (15 s by default), so idle streams live on.
        self._stream_read_timeout = stream_read_timeout
        self._reconnect = reconnect or Reconnect()
        self._connect()

    def _connect(self) -> None:
        raise NotImplementedError

    def _stream_options(self, cursor: _Cursor, run_id: str) -> dict[str, Any]:
        request = cursor.request(run_id)
        timeout = cursor.timeout(self._timeout, self._stream_read_timeout)
        return {"method": request.method, "url": request.path, **request.options(), "timeout": timeout}


class AsyncClient(_Base):
    """The runyard HTTP API for asyncio code; use it as an async context manager."""

    def _connect(self) -> None:
        self._http = httpx.AsyncClient(**self._http_options)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, request: _Request) -> Any:
        response = await self._http.request(request.method, request.path, **request.options())
        return _answer(response)

    async def create(
        self,
        pipeline: str,
        input: Any,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        multitask: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Start a run; its snapshot (status ``queued``)."""
        args = (pipeline, input, session_id, metadata, timeout_s, multitask, idempotency_key)
        return _object(await self._call(_create_request(*args)))

    async def snapshot(self, run_id: str) -> dict[str, Any]:
        return _object(await self._call(_Request("GET", _path("runs", run_id))))

    async def events(self, run_id: str, after: int = 0, limit: int | None = None) -> dict[str, Any]:
        """A page of events: ``{"events", "next_after", "status"}``."""
        params = {"after": after, "limit": limit}
        return _object(await self._call(_Request("GET", _path("runs", run_id, "events"), params)))

    async def cancel(self, run_id: str) -> dict[str, Any]:
        return _object(await self._call(_Request("POST", _path("runs", run_id, "cancel"))))

    async def list_runs(
        self,
        session_id: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        before: str | None = None,
    ) -> dict[str, Any]:
        """The caller's runs, newest first: ``{"runs", "next"}``."""
        return _object(await self._call(_list_runs_request(session_id, status, limit, before)))

    async def create_session(self, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        body = {} if metadata is None else {"metadata": metadata}
        return _object(await self._call(_Request("POST", _path("sessions"), body=body)))

    async def session(self, session_id: str) -> dict[str, Any]:
        return _object(await self._call(_Request("GET", _path("sessions", session_id))))

    async def delete_session(self, session_id: str) -> None:
        await self._call(_Request("DELETE", _path("sessions", session_id)))

    async def pipelines(self) -> Any:
        return await self._call(_Request("GET", _path("pipelines")))

    def stream(self, run_id: str, after: int = 0) -> AsyncIterator[Event]:
        """Every event after ``after``, each once and in order, until ``end``; resumes after drops."""
        return self._follow(run_id, after, None)

    # `timeout` rather than asyncio.timeout(): the same call as Client.wait, and it bounds reconnects too.
    async def wait(self, run_id: str, timeout: float | None = None) -> dict[str, Any]:  # noqa: ASYNC109
        """The run's final snapshot, once it has finished; ``TimeoutError`` after ``timeout`` seconds."""
        deadline = _deadline(timeout)
        snapshot = await self.snapshot(run_id)
        if snapshot["status"] in FINISHED:
            return snapshot
        async for _ in self._follow(run_id, int(snapshot["last_seq"]), deadline):
            pass
        return await self.snapshot(run_id)

    async def _follow(self, run_id: str, after: int, deadline: float | None) -> AsyncIterator[Event]:
        cursor = _Cursor(after, self._reconnect, deadline)
        while True:
            try:
                async with self._http.stream(**self._stream_options(cursor, run_id)) as response:
                    if response.is_error:
                        await response.aread()
                        raise api_error(response)
                    async for line in response.aiter_lines():
                        event = cursor.feed(line)
                        if event is not None:
                            yield event
                            if cursor.ended:
                                return
                if cursor.nothing_left(await self.snapshot(run_id)):
                    return
                raise _Closed("the server closed the stream before its end event")
            except _DROPS as exc:
                if not _retryable(exc):
                    raise
                await asyncio.sleep(cursor.retry_in(exc))


class Client(_Base):
    """The runyard HTTP API, blocking; the same methods as ``AsyncClient``."""

    def _connect(self) -> None:
        self._http = httpx.Client(**self._http_options)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, request: _Request) -> Any:
        return _answer(self._http.request(request.method, request.path, **request.options()))

    def create(
        self,
        pipeline: str,
        input: Any,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        multitask: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Start a run; its snapshot (status ``queued``)."""
        args = (pipeline, input, session_id, metadata, timeout_s, multitask, idempotency_key)
        return _object(self._call(_create_request(*args)))

    def snapshot(self, run_id: str) -> dict[str, Any]:
        return _object(self._call(_Request("GET", _path("runs", run_id))))

    def events(self, run_id: str, after: int = 0, limit: int | None = None) -> dict[str, Any]:
        params = {"after": after, "limit": limit}
        return _object(self._call(_Request("GET", _path("runs", run_id, "events"), params)))

    def cancel(self, run_id: str) -> dict[str, Any]:
        return _object(self._call(_Request("POST", _path("runs", run_id, "cancel"))))

    def list_runs(
        self,
        session_id: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        before: str | None = None,
    ) -> dict[str, Any]:
        return _object(self._call(_list_runs_request(session_id, status, limit, before)))

    def create_session(self, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        body = {} if metadata is None else {"metadata": metadata}
        return _object(self._call(_Request("POST", _path("sessions"), body=body)))

    def session(self, session_id: str) -> dict[str, Any]:
        return _object(self._call(_Request("GET", _path("sessions", session_id))))

    def delete_session(self, session_id: str) -> None:
        self._call(_Request("DELETE", _path("sessions", session_id)))

    def pipelines(self) -> Any:
        return self._call(_Request("GET", _path("pipelines")))

    def stream(self, run_id: str, after: int = 0) -> Iterator[Event]:
        """Every event after ``after``, each once and in order, until ``end``; resumes after drops."""
        return self._follow(run_id, after, None)

    def wait(self, run_id: str, timeout: float | None = None) -> dict[str, Any]:
        """The run's final snapshot, once it has finished; ``TimeoutError`` after ``timeout`` seconds."""
        deadline = _deadline(timeout)
        snapshot = self.snapshot(run_id)
        if snapshot["status"] in FINISHED:
            return snapshot
        for _ in self._follow(run_id, int(snapshot["last_seq"]), deadline):
            pass
        return self.snapshot(run_id)

    def _follow(self, run_id: str, after: int, deadline: float | None) -> Iterator[Event]:
        cursor = _Cursor(after, self._reconnect, deadline)
        while True:
            try:
                with self._http.stream(**self._stream_options(cursor, run_id)) as response:
                    if response.is_error:
                        response.read()
                        raise api_error(response)
                    for line in response.iter_lines():
                        event = cursor.feed(line)
                        if event is not None:
                            yield event
                            if cursor.ended:
                                return
                if cursor.nothing_left(self.snapshot(run_id)):
                    return
                raise _Closed("the server closed the stream before its end event")
            except _DROPS as exc:
                if not _retryable(exc):
                    raise
                time.sleep(cursor.retry_in(exc))


__all__ = [
    "APIError",
    "AsyncClient",
    "Client",
    "Reconnect",
    "StreamLost",
    "api_error",
]
