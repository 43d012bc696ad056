"""The SQLite claim's shortcut for new owners: it settles a claim alone only
when what it found is exactly what the fair walk over every owner would take."""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runyard.models import Run, RunStatus, RunUpdate
from runyard.store import AppendGroup
from runyard.store.sqlite import SQLiteStore
from runyard.store.sqlite.schema import CLAIMABLE, FRESH_CLAIMABLE, FRESH_SCAN

T0 = 1_700_000_000.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'runyard.db'}")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def _owner(rng: random.Random, owners: list[str]) -> str:
    """Mostly a new owner, else one seen before (served, running, or queued only)."""
    if not owners or rng.random() < 0.7:
        owners.append(f"owner{len(owners)}")
        return owners[-1]
    return rng.choice(owners)


def _ids(rows: list[sqlite3.Row]) -> list[str]:
    return [row[0] for row in rows]  # RUN_COLUMNS begin with run_id


async def test_new_owners_first_runs_are_the_walk_s_claim_whenever_the_shortcut_settles_it(
    store: SQLiteStore, tmp_path: Path
) -> None:
    """Waves of runs of owners old and new, some behind their session's head,
    some of a pipeline not always served, some not yet due, claimed by claims
    of random sizes while running runs finish at random. Before every claim
    both statements are asked: whenever the shortcut finds as many runs as the
    claim wants, they are the walk's, in its order, and the claim takes the
    walk's runs. Both outcomes occur, so neither path goes untested."""
    rng = random.Random(15)
    reader = sqlite3.connect(tmp_path / "runyard.db", isolation_level=None)
    owners: list[str] = []
    running: list[str] = []
    settled = fell_back = serial = 0
    at = T0
    for _ in range(12):
        for _ in range(rng.randrange(5, 40)):
            serial += 1
            session = rng.randrange(serial) if rng.random() < 0.2 else serial  # some wait behind others
            pipeline = "elsewhere" if rng.random() < 0.05 else "ticker"
            later = at + 3 if rng.random() < 0.05 else None
            await store.create_run(
                Run(
                    f"run_{serial}",
                    f"ses_{session}",
                    _owner(rng, owners),
                    pipeline,
                    RunStatus.QUEUED,
                    {"count": 1},
                    created_at=at,
                    scheduled_for=later,
                )
            )
        while await store.count_queued():
            at += 1
            limit = rng.randrange(1, 9)
            served = ["ticker", "elsewhere"] if rng.random() < 0.3 else ["ticker"]
            fresh = reader.execute(FRESH_CLAIMABLE, (json.dumps(served), at, limit, limit * FRESH_SCAN)).fetchall()
            walk = reader.execute(CLAIMABLE, (json.dumps(served), at, limit)).fetchall()
            if len(fresh) == limit:
                settled += 1
                assert _ids(fresh) == _ids(walk)
            else:
                fell_back += 1
            claims = await store.claim("w1", limit, at, at + 30, pipelines=served)
            assert [claim.run.run_id for claim in claims] == _ids(walk)
            running += [claim.run.run_id for claim in claims]
            rng.shuffle(running)
            for run_id in running[: rng.randrange(len(running) + 1)]:
                done = RunUpdate(status=RunStatus.SUCCEEDED, finished_at=at, clear_lease=True)
                assert isinstance((await store.append([AppendGroup(run_id, [], done)]))[0], list)
                running.remove(run_id)
    reader.close()
    assert settled > 10 and fell_back > 10, (settled, fell_back)
