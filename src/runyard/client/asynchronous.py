"""``AsyncClient``: the API over asyncio (``Client`` is the same, blocking)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any, Self, cast

import httpx

from runyard.client.api import (
    FINISHED,
    UNCHANGED,
    APIError,
    Event,
    _answer,
    _create_request,
    _cron_patch,
    _cron_request,
    _input_request,
    _item_request,
    _list_runs_request,
    _list_sessions_request,
    _namespaces_request,
    _object,
    _path,
    _put_item_request,
    _Request,
    _search_request,
    _session_request,
    api_error,
)
from runyard.client.clients import _Base
from runyard.client.resume import _DROPS, _Closed, _Cursor, _deadline, _SessionCursor
from runyard.client.types import Cron, EventPage, Item, RunPage, RunSnapshot, SessionInfo, SessionPage
from runyard.observability.propagation import inject_async


class AsyncClient(_Base):
    """The runyard HTTP API for asyncio code; use it as an async context manager."""

    def _connect(self) -> None:
        self._http = httpx.AsyncClient(**self._http_options, event_hooks={"request": [inject_async]})

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, request: _Request) -> Any:
        try:
            response = await self._http.request(request.method, request.path, **request.options())
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
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
        *,
        after_s: float | None = None,
        webhook: str | None = None,
    ) -> RunSnapshot:
        """Start a run; its snapshot (status ``queued``; with ``after_s``, claimed only that much
        later). With ``webhook``, its final snapshot is POSTed there once it finishes (``runyard.webhooks``)."""
        args = (pipeline, input, session_id, metadata, timeout_s, multitask, idempotency_key, after_s, webhook)
        return cast(RunSnapshot, _object(await self._call(_create_request(*args))))

    async def snapshot(self, run_id: str) -> RunSnapshot:
        return cast(RunSnapshot, _object(await self._call(_Request("GET", _path("runs", run_id)))))

    async def events(self, run_id: str, after: int = 0, limit: int | None = None) -> EventPage:
        """A page of events: ``{"events", "next_after", "status"}``."""
        params = {"after": after, "limit": limit}
        return cast(EventPage, _object(await self._call(_Request("GET", _path("runs", run_id, "events"), params))))

    async def cancel(self, run_id: str) -> RunSnapshot:
        return cast(RunSnapshot, _object(await self._call(_Request("POST", _path("runs", run_id, "cancel")))))

    async def answer(self, run_id: str, value: Any, ask_id: str | None = None) -> RunSnapshot:
        """Answer the question a waiting run asked (``ctx.ask``); its snapshot (status ``queued``).

        ``ask_id`` makes the answer conditional: it is refused (409 ``ask_mismatch``) when the
        run now waits on another question, so an answer never lands on a question it was not for.
        """
        return cast(RunSnapshot, _object(await self._call(_input_request(run_id, value, ask_id))))

    async def list_runs(
        self,
        session_id: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        before: str | None = None,
    ) -> RunPage:
        """The caller's runs, newest first: ``{"runs", "next"}``."""
        return cast(RunPage, _object(await self._call(_list_runs_request(session_id, status, limit, before))))

    async def create_session(
        self, metadata: dict[str, Any] | None = None, session_id: str | None = None, if_exists: str | None = None
    ) -> SessionInfo:
        """A new session (under your own ``session_id``, if given: scoped to you).

        ``if_exists``: ``"raise"`` (default: ``APIError`` 409 ``session_exists``) or
        ``"do_nothing"`` (your existing session of that id)."""
        return cast(SessionInfo, _object(await self._call(_session_request(metadata, session_id, if_exists))))

    async def list_sessions(
        self, limit: int | None = None, before: str | None = None, metadata: dict[str, str] | None = None
    ) -> SessionPage:
        """Your sessions, newest activity first: ``{"sessions", "next"}`` (``next``: the
        following page's ``before``); ``metadata``: only those with these values."""
        return cast(SessionPage, _object(await self._call(_list_sessions_request(limit, before, metadata))))

    async def session(self, session_id: str) -> SessionInfo:
        return cast(SessionInfo, _object(await self._call(_Request("GET", _path("sessions", session_id)))))

    async def delete_session(self, session_id: str) -> None:
        await self._call(_Request("DELETE", _path("sessions", session_id)))

    # -- crons (issue 13) --

    async def create_cron(
        self,
        pipeline: str,
        input: Any,
        schedule: str,
        *,
        timezone: str | None = None,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        webhook: str | None = None,
        enabled: bool | None = None,
    ) -> Cron:
        """A cron: a run of ``pipeline`` at each time of the 5-field ``schedule`` (in ``timezone``, UTC by default)."""
        options: dict[str, Any] = {"timezone": timezone, "session_id": session_id, "metadata": metadata}
        options.update(webhook=webhook, enabled=enabled)
        return cast(Cron, _object(await self._call(_cron_request(pipeline, input, schedule, options))))

    async def crons(self) -> list[Cron]:
        """The caller's crons, oldest first."""
        crons: list[Cron] = _object(await self._call(_Request("GET", _path("crons"))))["crons"]
        return crons

    async def cron(self, cron_id: str) -> Cron:
        return cast(Cron, _object(await self._call(_Request("GET", _path("crons", cron_id)))))

    async def update_cron(
        self, cron_id: str, *, schedule: str | None = None, input: Any = UNCHANGED, enabled: bool | None = None
    ) -> Cron:
        """Change a cron's schedule, input or whether it is enabled; the cron."""
        return cast(Cron, _object(await self._call(_cron_patch(cron_id, schedule, input, enabled))))

    async def delete_cron(self, cron_id: str) -> None:
        await self._call(_Request("DELETE", _path("crons", cron_id)))

    async def pipelines(self) -> Any:
        return await self._call(_Request("GET", _path("pipelines")))

    # -- the long-term store (namespaces as lists of parts) ----------------------

    async def put_item(
        self, namespace: Sequence[str], key: str, value: dict[str, Any], ttl_s: float | None = None
    ) -> Item:
        """Insert or replace one of the caller's items; the item stored."""
        return cast(Item, _object(await self._call(_put_item_request(namespace, key, value, ttl_s))))

    async def get_item(self, namespace: Sequence[str], key: str) -> Item:
        """The item (``APIError`` 404 ``item_not_found`` when there is none)."""
        return cast(Item, _object(await self._call(_item_request("GET", namespace, key))))

    async def delete_item(self, namespace: Sequence[str], key: str) -> None:
        await self._call(_item_request("DELETE", namespace, key))

    async def search_items(
        self,
        namespace_prefix: Sequence[str] = (),
        *,
        filter: dict[str, Any] | None = None,
        query: str | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> list[Item]:
        """Items under the prefix, filtered; best match first (each with ``score``) given a query."""
        found = _object(await self._call(_search_request(namespace_prefix, filter, query, limit, offset)))
        items: list[Item] = found["items"]
        return items

    async def list_namespaces(self, prefix: Sequence[str] = (), max_depth: int | None = None) -> list[list[str]]:
        namespaces: list[list[str]] = _object(await self._call(_namespaces_request(prefix, max_depth)))["namespaces"]
        return namespaces

    def stream(self, run_id: str, after: int = 0) -> AsyncIterator[Event]:
        """Every event after ``after``, each once and in order, until ``end``; resumes after drops."""
        return self._follow(run_id, after, None)

    async def stream_session(self, session_id: str, after: str | None = None) -> AsyncIterator[Event]:
        """Every event of every run of the session (each with ``run_id``) after the
        cursor ``after`` (a frame's ``id``; None: from the start), each once and in
        order, until the session is deleted or expires; resumes after drops."""
        cursor = _SessionCursor(after, self._reconnect)
        while True:
            try:
                async with self._http.stream(**self._stream_options(cursor, session_id)) as response:
                    cursor.connected = True
                    if response.is_error:
                        await response.aread()
                        raise api_error(response)
                    async for line in response.aiter_lines():
                        event = cursor.feed(line)
                        if event is not None:
                            yield event
                if await self._session_over(cursor, session_id):
                    return
                raise _Closed("the server closed the session stream")
            except _DROPS as exc:
                if not cursor.may_retry(exc):
                    if isinstance(exc, httpx.TransportError):
                        raise self._unreachable(exc) from exc
                    raise
                await asyncio.sleep(cursor.retry_in(exc))

    async def _session_over(self, cursor: _SessionCursor, session_id: str) -> bool:
        """Whether the session a closed stream followed is gone (deleted or expired)."""
        try:
            return cursor.nothing_left(await self.session(session_id))
        except APIError as exc:
            if exc.status == 404:
                return True
            raise

    # `timeout` rather than asyncio.timeout(): the same call as Client.wait, and it bounds reconnects too.
    async def wait(self, run_id: str, timeout: float | None = None) -> RunSnapshot:  # noqa: ASYNC109
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
                    cursor.connected = True
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
                if not cursor.may_retry(exc):
                    if isinstance(exc, httpx.TransportError):
                        raise self._unreachable(exc) from exc
                    raise
                await asyncio.sleep(cursor.retry_in(exc))
