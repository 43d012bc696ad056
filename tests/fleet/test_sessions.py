"""``multitask`` and session deletion hold across API processes (issue 10): the
store decides them in the creation's (or deletion's) own transaction, with the
session's row locked, so two requests racing through two API processes take
turns however they interleave. 20 racing pairs each, on PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from tests.fleet.conftest import Fleet
from tests.remote import OWNER
from tests.support import ServerProcess

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

PAIRS = 20
LONG_NAP = {"pipeline": "nap", "input": {"seconds": 30}}  # still unfinished when the pair races


@pytest.fixture
def apis(fleet: Fleet) -> list[ServerProcess]:
    """Two API processes and a worker."""
    pair = [fleet.start("api"), fleet.start("api")]
    fleet.start("worker")
    return pair


Clients = tuple[httpx.AsyncClient, httpx.AsyncClient]


@asynccontextmanager
async def clients_of(apis: list[ServerProcess]) -> AsyncIterator[Clients]:
    first, second = (httpx.AsyncClient(base_url=api.url, headers=OWNER, timeout=30) for api in apis)
    try:
        yield first, second
    finally:
        await first.aclose()
        await second.aclose()


async def new_session(client: httpx.AsyncClient, *, busy: bool) -> str:
    """A session, with a long run unfinished in it when ``busy``."""
    response = await client.post("/v1/sessions", json={})
    assert response.status_code == 201, response.text
    session_id: str = response.json()["session_id"]
    if busy:
        started = await client.post("/v1/runs", json={**LONG_NAP, "session_id": session_id})
        assert started.status_code == 201, started.text
    return session_id


def run_in(session_id: str, multitask: str) -> dict[str, Any]:
    return {"pipeline": "nap", "input": {"seconds": 30}, "session_id": session_id, "multitask": multitask}


def unfinished_in(fleet: Fleet, session_id: str) -> list[str]:
    rows = fleet.query(
        "SELECT run_id FROM runs WHERE session_id = $1 AND status IN ('queued', 'running') ORDER BY run_id",
        session_id,
    )
    return [row["run_id"] for row in rows]


async def race(pairs: int, trial: Callable[[], Awaitable[None]]) -> None:
    for _ in range(pairs):
        await trial()


def test_two_api_processes_racing_creations_with_reject_admit_exactly_one(
    fleet: Fleet, apis: list[ServerProcess]
) -> None:
    """Regression: ``reject`` was a process-local lock; two creations racing on one
    session through two API processes both got 201 in 12 of 20 tries."""
    outcomes: list[list[int]] = []

    async def main() -> None:
        async with clients_of(apis) as (first, second):

            async def trial() -> None:
                session_id = await new_session(first, busy=False)
                body = run_in(session_id, "reject")
                answers = await asyncio.gather(first.post("/v1/runs", json=body), second.post("/v1/runs", json=body))
                outcomes.append(sorted(a.status_code for a in answers))
                refused = [a.json()["error"]["code"] for a in answers if a.status_code == 409]
                assert refused == ["session_busy"], [a.text for a in answers]
                assert (await first.delete(f"/v1/sessions/{session_id}")).status_code == 204

            await race(PAIRS, trial)

    asyncio.run(main())
    assert outcomes == [[201, 409]] * PAIRS


def test_two_api_processes_racing_creations_with_interrupt_leave_exactly_one_unfinished_run(
    fleet: Fleet, apis: list[ServerProcess]
) -> None:
    """Regression: two interrupting creations racing through two API processes left
    both new runs alive in 20 of 20 tries."""
    survivors: list[int] = []

    async def main() -> None:
        async with clients_of(apis) as (first, second):

            async def trial() -> None:
                session_id = await new_session(first, busy=True)
                body = run_in(session_id, "interrupt")
                answers = await asyncio.gather(first.post("/v1/runs", json=body), second.post("/v1/runs", json=body))
                assert [a.status_code for a in answers] == [201, 201], [a.text for a in answers]
                left = await asyncio.to_thread(unfinished_in, fleet, session_id)
                survivors.append(len(left))
                assert set(left) <= {a.json()["run_id"] for a in answers}
                assert (await first.delete(f"/v1/sessions/{session_id}")).status_code == 204

            await race(PAIRS, trial)

    asyncio.run(main())
    assert survivors == [1] * PAIRS


def test_a_session_deleted_while_another_api_process_creates_in_it_keeps_no_unfinished_run(
    fleet: Fleet, apis: list[ServerProcess]
) -> None:
    """Regression: DELETE answered 204 while a run created at the same moment through
    another API process went on running in the deleted session (6 of 20 tries)."""
    left_behind: list[list[str]] = []

    async def main() -> None:
        async with clients_of(apis) as (first, second):

            async def trial() -> None:
                session_id = await new_session(first, busy=True)
                deleted, created = await asyncio.gather(
                    first.delete(f"/v1/sessions/{session_id}"),
                    second.post("/v1/runs", json=run_in(session_id, "enqueue")),
                )
                assert deleted.status_code == 204, deleted.text
                assert created.status_code in (201, 404), created.text  # 404 once the session is gone
                left_behind.append(await asyncio.to_thread(unfinished_in, fleet, session_id))

            await race(PAIRS, trial)

    asyncio.run(main())
    assert left_behind == [[]] * PAIRS
