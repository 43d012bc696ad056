"""``AsyncClient`` and ``Client``: the same requests, asyncio or blocking."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Any, Self

import httpx

from runyard.client.api import (
    DEFAULT_URL,
    FINISHED,
    Event,
    _answer,
    _create_request,
    _input_request,
    _list_runs_request,
    _object,
    _path,
    _Request,
    api_error,
)
from runyard.client.resume import _DROPS, Reconnect, _Closed, _Cursor, _deadline, _retryable


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
        webhook: str | None = None,
    ) -> dict[str, Any]:
        """Start a run; its snapshot (status ``queued``). With ``webhook``, its
        final snapshot is POSTed there once it finishes (``runyard.webhooks``)."""
        args = (pipeline, input, session_id, metadata, timeout_s, multitask, idempotency_key, webhook)
        return _object(await self._call(_create_request(*args)))

    async def snapshot(self, run_id: str) -> dict[str, Any]:
        return _object(await self._call(_Request("GET", _path("runs", run_id))))

    async def events(self, run_id: str, after: int = 0, limit: int | None = None) -> dict[str, Any]:
        """A page of events: ``{"events", "next_after", "status"}``."""
        params = {"after": after, "limit": limit}
        return _object(await self._call(_Request("GET", _path("runs", run_id, "events"), params)))

    async def cancel(self, run_id: str) -> dict[str, Any]:
        return _object(await self._call(_Request("POST", _path("runs", run_id, "cancel"))))

    async def answer(self, run_id: str, value: Any, ask_id: str | None = None) -> dict[str, Any]:
        """Answer the question a waiting run asked (``ctx.ask``); its snapshot (status ``queued``).

        ``ask_id`` makes the answer conditional: it is refused (409 ``ask_mismatch``) when the
        run now waits on another question, so an answer never lands on a question it was not for.
        """
        return _object(await self._call(_input_request(run_id, value, ask_id)))

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
        webhook: str | None = None,
    ) -> dict[str, Any]:
        """Start a run; its snapshot (status ``queued``). With ``webhook``, its
        final snapshot is POSTed there once it finishes (``runyard.webhooks``)."""
        args = (pipeline, input, session_id, metadata, timeout_s, multitask, idempotency_key, webhook)
        return _object(self._call(_create_request(*args)))

    def snapshot(self, run_id: str) -> dict[str, Any]:
        return _object(self._call(_Request("GET", _path("runs", run_id))))

    def events(self, run_id: str, after: int = 0, limit: int | None = None) -> dict[str, Any]:
        params = {"after": after, "limit": limit}
        return _object(self._call(_Request("GET", _path("runs", run_id, "events"), params)))

    def cancel(self, run_id: str) -> dict[str, Any]:
        return _object(self._call(_Request("POST", _path("runs", run_id, "cancel"))))

    def answer(self, run_id: str, value: Any, ask_id: str | None = None) -> dict[str, Any]:
        """Answer the question a waiting run asked (``ctx.ask``); its snapshot (status ``queued``)."""
        return _object(self._call(_input_request(run_id, value, ask_id)))

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
