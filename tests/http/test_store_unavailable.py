"""A store that is busy or down: 503 ``store_unavailable`` with ``Retry-After`` on
every route, creation included, never 500; and the server is itself again after."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from runyard import RunStatus
from tests.http.conftest import NewClient, Serve
from tests.http.helpers import assert_error, create_run, wait_finished
from tests.services import postgres_database
from tests.support import make_app

TICKER = {"pipeline": "ticker", "input": {"marker": "busy", "count": 1}}


def assert_unavailable(response: httpx.Response) -> None:
    assert_error(response, 503, "store_unavailable")
    assert int(response.headers["retry-after"]) >= 1


@contextlib.contextmanager
def write_lock_held(path: Path) -> Iterator[None]:
    """Another connection holds the database's write lock (as a long sweep or a second
    process would) until the block ends."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


def test_busy_sqlite_is_503_store_unavailable_with_retry_after(
    serve: Serve, new_client: NewClient, tmp_path: Path
) -> None:
    """Issue 10: with SQLite's lock held past the busy timeout, ``POST /v1/runs`` answered
    500 ``internal_error`` (``sqlite3.OperationalError: database is locked``)."""
    path = tmp_path / "busy.db"
    client = new_client(serve(store=f"sqlite:///{path}?busy_timeout_ms=50"))
    with write_lock_held(path):
        for route in ("/v1/runs", "/v1/runs/wait", "/v1/runs/stream"):
            assert_unavailable(client.post(route, json=TICKER))
        assert_unavailable(client.post("/v1/sessions"))
        assert client.get("/v1/runs").json() == {"runs": [], "next": None}  # readers go on (WAL)
    run = create_run(client, "ticker", TICKER["input"])
    assert wait_finished(client, run["run_id"])["status"] == "succeeded"
    assert [listed["run_id"] for listed in client.get("/v1/runs").json()["runs"]] == [run["run_id"]]
    assert client.get("/readyz").status_code == 200


class Relay:
    """A TCP relay to PostgreSQL on a fixed port, which a test stops (new connections
    are refused, open ones reset, as when the server goes down) and starts again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers.update((writer, up_writer))

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._writers.difference_update((writer, up_writer))


@contextlib.asynccontextmanager
async def relayed_postgres() -> AsyncIterator[tuple[str, Relay]]:
    async with postgres_database() as url:
        parts = urlsplit(url)
        relay = Relay((parts.hostname or "127.0.0.1", parts.port or 5432))
        await relay.start()
        try:
            netloc = f"{parts.username}@127.0.0.1:{relay.port}" if parts.username else f"127.0.0.1:{relay.port}"
            yield urlunsplit(parts._replace(netloc=netloc)), relay
        finally:
            with contextlib.suppress(Exception):
                await relay.stop()


@pytest.mark.postgres
async def test_postgres_refusing_connections_is_503_store_unavailable_with_retry_after() -> None:
    async with relayed_postgres() as (url, relay):
        app = make_app(store=url, drain_s=0.2)
        async with app.running():
            transport = httpx.ASGITransport(app=app.http())
            headers = {"X-Client-Id": "pg-down"}
            async with httpx.AsyncClient(transport=transport, base_url="http://runyard", headers=headers) as client:
                await relay.stop()  # open connections reset, new ones refused
                answers: list[Any] = [
                    await client.post("/v1/runs", json=TICKER),
                    await client.get("/v1/runs"),
                    await client.get("/v1/runs/run_000000000000000000000000"),
                    await client.post("/v1/sessions"),
                ]
                for answer in answers:
                    assert_unavailable(answer)
                await relay.start()  # the same port: the server is back
                created = await client.post("/v1/runs", json=TICKER)
                assert created.status_code == 201, created.text
                run = await app.runtime.get_run("pg-down", created.json()["run_id"])
                done = await app.runtime.wait(run, 10)
                assert done is not None and done.status is RunStatus.SUCCEEDED
