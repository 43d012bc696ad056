"""The claim's shortcut for new owners, on SQLite and PostgreSQL: it settles a
claim alone only when what it found is exactly what the fair walk over every
owner with queued runs would take."""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from runyard.models import Run, RunStatus, RunUpdate, Session
from runyard.store import AppendGroup, Store
from runyard.store.postgres import PostgresStore
from runyard.store.postgres import runs as postgres_runs
from runyard.store.postgres import schema as postgres_schema
from runyard.store.sqlite import SQLiteStore
from runyard.store.sqlite import schema as sqlite_schema

T0 = 1_700_000_000.0

# (limit, pipelines served, at) -> (the shortcut's run ids, the walk's)
Ask = Callable[[int, list[str], float], Awaitable[tuple[list[str], list[str]]]]


async def test_sqlite_claims_take_the_walk_s_runs_and_the_shortcut_agrees_whenever_it_settles(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'runyard.db'}")
    await store.open()
    reader = sqlite3.connect(tmp_path / "runyard.db", isolation_level=None)

    async def ask(limit: int, served: list[str], at: float) -> tuple[list[str], list[str]]:
        shortcut = [
            row[0]
            for row in reader.execute(
                sqlite_schema.FRESH_CLAIMABLE, (json.dumps(served), at, limit, limit * sqlite_schema.FRESH_SCAN)
            )
        ]
        walk = [row[0] for row in reader.execute(sqlite_schema.CLAIMABLE, (json.dumps(served), at, limit))]
        return shortcut, walk

    try:
        await _claim_waves(store, ask, wanted=lambda limit: limit)
    finally:
        reader.close()
        await store.close()


@pytest.mark.postgres
async def test_postgres_claims_take_the_walk_s_runs_and_the_shortcut_agrees_whenever_it_settles(
    postgres_url: str,
) -> None:
    store = PostgresStore(postgres_url)
    await store.open()
    reader = await asyncpg.connect(postgres_url)

    def wanted(limit: int) -> int:
        return limit * postgres_runs.CANDIDATES_PER_CLAIM + postgres_runs.CANDIDATES_EXTRA

    async def ask(limit: int, served: list[str], at: float) -> tuple[list[str], list[str]]:
        args = (wanted(limit), served, at)
        shortcut = [row[0] for row in await reader.fetch(postgres_schema.FRESH, *args)]
        return shortcut, [row[0] for row in await reader.fetch(postgres_schema.CLAIMABLE, *args)]

    try:
        await _claim_waves(store, ask, wanted)
    finally:
        await reader.close()
        await store.close()


async def _claim_waves(store: Store, ask: Ask, wanted: Callable[[int], int]) -> None:
    """Waves of runs of owners old and new, some behind their session's head,
    some of a pipeline not always served, some not yet due, claimed by claims
    of random sizes while running runs finish at random. Before every claim
    both statements are asked: whenever the shortcut finds as many runs as the
    claim wants, they are the walk's, in its order; and the claim takes the
    walk's first runs. Both outcomes occur, so neither path goes untested."""
    rng = random.Random(15)
    owners: list[str] = []
    sessions: set[str] = set()
    running: list[str] = []
    settled = fell_back = serial = 0
    at = T0
    for _ in range(12):
        for _ in range(rng.randrange(5, 40)):
            serial += 1
            owner = _owner(rng, owners)
            session = f"ses_{rng.randrange(serial) if rng.random() < 0.2 else serial}"  # some wait behind others
            run = Run(
                f"run_{serial}",
                session,
                owner,
                "elsewhere" if rng.random() < 0.05 else "ticker",
                RunStatus.QUEUED,
                {"count": 1},
                created_at=at,
                scheduled_for=at + 3 if rng.random() < 0.05 else None,
            )
            fresh_session = None if session in sessions else Session(session, owner, at, at)
            sessions.add(session)
            await store.create_run(run, fresh_session)
        while await store.count_queued():
            at += 1
            limit = rng.randrange(1, 9)
            served = ["ticker", "elsewhere"] if rng.random() < 0.3 else ["ticker"]
            shortcut, walk = await ask(limit, served, at)
            if len(shortcut) == wanted(limit):
                settled += 1
                assert shortcut == walk
            else:
                fell_back += 1
            claims = await store.claim("w1", limit, at, at + 30, pipelines=served)
            assert [claim.run.run_id for claim in claims] == walk[:limit]
            running += [claim.run.run_id for claim in claims]
            rng.shuffle(running)
            for run_id in running[: rng.randrange(len(running) + 1)]:
                done = RunUpdate(status=RunStatus.SUCCEEDED, finished_at=at, clear_lease=True)
                assert isinstance((await store.append([AppendGroup(run_id, [], done)]))[0], list)
                running.remove(run_id)
    assert settled > 5 and fell_back > 5, (settled, fell_back)


def _owner(rng: random.Random, owners: list[str]) -> str:
    """Mostly a new owner, else one seen before (served, running, or queued only)."""
    if not owners or rng.random() < 0.7:
        owners.append(f"owner{len(owners)}")
        return owners[-1]
    return rng.choice(owners)
