"""A busy PostgreSQL (a lock held past ``lock_timeout``, a deadlock) answers 503
``store_unavailable`` with ``Retry-After`` in the contract's envelope, never 500;
a deadlock is first tried again, which mostly succeeds; the server is itself
again after. The store's side of each is in ``tests/store/test_postgres_errors.py``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from runyard import RunStatus
from runyard.app import Runyard
from runyard.store.postgres import connection as pg_connection
from tests.governance.support import wait_until
from tests.http.test_store_unavailable import TICKER, assert_unavailable
from tests.store.test_postgres_errors import blocked_by, lock, other_connection, with_settings
from tests.support import make_app

pytestmark = pytest.mark.postgres


@contextlib.asynccontextmanager
async def served(url: str) -> AsyncIterator[tuple[Runyard, httpx.AsyncClient]]:
    """The app on ``url`` (its backends end a deadlock after 100 ms), and a client of its API."""
    app = make_app(store=with_settings(url, deadlock_timeout="100ms"), drain_s=0.2)
    async with app.running():
        transport = httpx.ASGITransport(app=app.http())
        headers = {"X-Client-Id": "pg-busy"}
        async with httpx.AsyncClient(transport=transport, base_url="http://runyard", headers=headers) as client:
            yield app, client


async def created(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await client.post("/v1/runs", json=body)
    assert response.status_code == 201, response.text
    run_id: str = response.json()["run_id"]
    return run_id


async def assert_healthy(app: Runyard, client: httpx.AsyncClient, session_id: str | None = None) -> None:
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200
    body = TICKER if session_id is None else {**TICKER, "session_id": session_id}
    run = await app.runtime.get_run("pg-busy", await created(client, body))
    done = await app.runtime.wait(run, 10)
    assert done is not None and done.status is RunStatus.SUCCEEDED


async def napping_in_a_session(app: Runyard, client: httpx.AsyncClient) -> tuple[str, str]:
    """A session with a running run that writes nothing for a minute (its lease is renewed after 10 s)."""
    session_id: str = (await client.post("/v1/sessions")).json()["session_id"]
    run_id = await created(client, {"pipeline": "nap", "input": {"seconds": 60}, "session_id": session_id})

    async def napping() -> bool:
        return any(event.type == "napping" for event in await app.runtime.store.read_events(run_id, 0, 100))

    await wait_until(napping)  # polled: the store announces no event to this test
    return session_id, run_id


async def delete_in_deadlock(
    client: httpx.AsyncClient, other: Any, session_id: str, run_id: str
) -> asyncio.Task[httpx.Response]:
    """``DELETE /v1/sessions/{id}`` locks the session's row then its runs'; ``other``
    the run's then the session's: PostgreSQL ends the deletion's transaction."""
    await lock(other, "runs", "run_id", run_id)
    deletion = asyncio.create_task(client.delete(f"/v1/sessions/{session_id}"))
    await blocked_by(other)
    await lock(other, "sessions", "session_id", session_id)
    return deletion


async def test_a_lock_held_past_lock_timeout_is_503_with_retry_after(postgres_url: str) -> None:
    async with served(with_settings(postgres_url, lock_timeout="200ms")) as (app, client):
        session_id: str = (await client.post("/v1/sessions")).json()["session_id"]
        async with other_connection(postgres_url) as other:
            await lock(other, "sessions", "session_id", session_id)
            assert_unavailable(await client.post("/v1/runs", json={**TICKER, "session_id": session_id}))
            assert_unavailable(await client.delete(f"/v1/sessions/{session_id}"))
        await assert_healthy(app, client, session_id)


async def test_a_deadlock_past_the_last_attempt_is_503_with_retry_after(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_connection, "CONFLICT_ATTEMPTS", 1)
    async with served(postgres_url) as (app, client):
        session_id, run_id = await napping_in_a_session(app, client)
        async with other_connection(postgres_url) as other:
            deletion = await delete_in_deadlock(client, other, session_id, run_id)
            assert_unavailable(await deletion)
        assert (await client.get(f"/v1/runs/{run_id}")).json()["status"] == "running"  # nothing was written
        await assert_healthy(app, client)


async def test_a_deadlocked_deletion_is_tried_again_and_succeeds(postgres_url: str) -> None:
    async with served(postgres_url) as (app, client):
        session_id, run_id = await napping_in_a_session(app, client)
        async with other_connection(postgres_url) as other:
            deletion = await delete_in_deadlock(client, other, session_id, run_id)
            assert not deletion.done()  # its next attempt waits for other's locks
        assert (await deletion).status_code == 204
        run = await app.runtime.get_run("pg-busy", run_id)
        done = await app.runtime.wait(run, 10)
        assert done is not None and done.status is RunStatus.CANCELLED
        await assert_healthy(app, client)
