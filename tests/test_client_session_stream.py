"""``Client.stream_session`` / ``AsyncClient.stream_session`` against a real
server: every event of every run of the session, each once and in order,
through connections that drop mid-frame, until the session is deleted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from itertools import islice
from typing import Any

import httpx
import pytest

from runyard.client import AsyncClient, Client, Reconnect
from tests.support import make_app, serve_in_thread

CUT_AFTER = 700  # bytes of each stream response before the connection "drops"
FAST = Reconnect(initial_delay_s=0.01, max_delay_s=0.05)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve_in_thread(make_app(store="memory://", drain_s=0.2)) as url:
        yield url


class _Cut(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream) -> None:
        self._inner = inner

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        for chunk in self._inner:
            if sent + len(chunk) >= CUT_AFTER:
                yield chunk[: CUT_AFTER - sent]
                raise httpx.ReadError("dropped on purpose")
            sent += len(chunk)
            yield chunk

    def close(self) -> None:
        self._inner.close()


class Dropping(httpx.HTTPTransport):
    """Every session stream response breaks off after ``CUT_AFTER`` bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.drops = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path.endswith("/stream"):
            assert isinstance(response.stream, httpx.SyncByteStream)
            response.stream = _Cut(response.stream)
            self.drops += 1
        return response


def conversation(client: Client, runs: int = 3) -> tuple[str, list[dict[str, Any]]]:
    session_id = client.create_session()["session_id"]
    logged = []
    for i in range(runs):
        run = client.create("ticker", {"marker": "m", "count": 3 + i}, session_id=session_id)
        client.wait(run["run_id"], timeout=10)
        logged += [{"run_id": run["run_id"], **e} for e in client.events(run["run_id"])["events"]]
    return session_id, logged


def test_stream_session_resumes_through_drops_without_gap_or_repeat(server: str) -> None:
    with Client(server, client_id="streamer", reconnect=FAST) as client:
        session_id, logged = conversation(client)
        transport = Dropping()
        client.close()
        client._http = httpx.Client(base_url=server, headers={"X-Client-Id": "streamer"}, transport=transport)
        stream = client.stream_session(session_id)
        streamed = list(islice(stream, len(logged)))
        stream.close()
    assert streamed == logged
    assert transport.drops > 2  # it really did reconnect


def test_stream_session_after_a_cursor_and_until_the_session_is_deleted(server: str) -> None:
    with Client(server, client_id="deleter") as client:
        session_id, logged = conversation(client, runs=1)
        with (
            httpx.Client(base_url=server, headers={"X-Client-Id": "deleter"}) as raw,
            raw.stream("GET", f"/v1/sessions/{session_id}/stream") as response,
        ):
            first_id = next(line for line in response.iter_lines() if line.startswith("id: "))[4:]
        events = client.stream_session(session_id, after=first_id)
        assert list(islice(events, len(logged) - 1)) == logged[1:]
        client.delete_session(session_id)
        assert list(events) == []  # ends, not a heartbeat wait: the session is gone


def test_async_stream_session(server: str) -> None:
    with Client(server, client_id="async") as client:
        session_id, logged = conversation(client, runs=2)

    async def read() -> list[dict[str, Any]]:
        async with AsyncClient(server, client_id="async") as client:
            stream: AsyncIterator[dict[str, Any]] = client.stream_session(session_id)
            got = [await anext(stream) for _ in logged]
            await client.delete_session(session_id)
            got += [event async for event in stream]
            return got

    assert asyncio.run(read()) == logged
