"""Operations console benchmark: what the dashboard's store reads cost on a
window full of finished runs.

    .venv/bin/python bench/console.py                        # SQLite (temp file) and memory
    .venv/bin/python bench/console.py --postgres postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/console.py --runs 50000

For each store it writes ``--runs`` finished runs of 50 owners (two pipelines;
each with 10 ``tick`` events and one ``usage`` event; one in 97 failed with a
findable error), all within the last hour, then times (best of 3, ms):

- ``pipeline_stats`` over the last hour, every owner's and one owner's
  (``GET /v1/stats/pipelines``);
- a text search for one failed run's error over every owner's runs
  (``GET /v1/runs?q=``; it scans the rows until the page is full or none are left);
- the newest page of 50 (``GET /v1/runs``), the floor.

On PostgreSQL it creates a database of its own and drops it afterwards. It
stops by itself, talks to nobody but 127.0.0.1 and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from _util import postgres_database

from runyard.models import EventDraft, Run, RunError, RunStatus, RunUpdate, Session, dumps
from runyard.store import AppendGroup, Store, store_from_url
from runyard.store.base import RunQuery

OWNERS = 50
BATCH = 500


async def fill(store: Store, runs: int) -> str:
    """Write the runs; the error text of one failed run, to search for."""
    start = time.time() - 1800
    needle = ""
    for first in range(0, runs, BATCH):
        groups = []
        for i in range(first, min(runs, first + BATCH)):
            at = start + i * 1800 / runs
            session = Session(f"ses_b{i}", f"owner{i % OWNERS}", created_at=at, last_activity=at)
            pipeline = "research" if i % 3 else "ticker"
            run = Run(f"run_b{i:08d}", session.session_id, session.owner, pipeline, RunStatus.RUNNING, {"n": i}, at)
            await store.create_run(run, session)
            drafts = [EventDraft(run.run_id, "tick", b'{"i":%d}' % k, at) for k in range(10)]
            usage = {"model": "m", "input_tokens": 100, "output_tokens": 50}
            drafts.append(EventDraft(run.run_id, "usage", dumps(usage), at))
            error = RunError("boom", f"upstream refused request {i}") if i % 97 == 0 else None
            needle = error.message if error else needle
            status = RunStatus.FAILED if error else RunStatus.SUCCEEDED
            update = RunUpdate(status, started_at=at, finished_at=at + (i % 10) / 10, error=error)
            groups.append(AppendGroup(run.run_id, drafts, update))
        await store.append(groups)
    return needle


async def best_ms(work: Callable[[], Awaitable[Any]], tries: int = 3) -> float:
    await work()  # warm
    times = []
    for _ in range(tries):
        began = time.perf_counter()
        await work()
        times.append(time.perf_counter() - began)
    return min(times) * 1000


async def measure(url: str, runs: int) -> None:
    store = store_from_url(url)
    await store.open()
    try:
        needle = await fill(store, runs)
        hour_ago = time.time() - 3600
        cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("stats, last hour, every owner", lambda: store.pipeline_stats(None, hour_ago)),
            ("stats, last hour, one owner", lambda: store.pipeline_stats("owner7", hour_ago)),
            ("search q=<an error>, every owner", lambda: store.list_runs(RunQuery(None, text=needle))),
            ("newest 50, every owner (floor)", lambda: store.list_runs(RunQuery(None))),
        ]
        for label, work in cases:
            print(f"{url.split(':')[0]:<10} {runs:>7} runs  {label:<34} {await best_ms(work):8.1f} ms")
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--postgres", help="an admin URL: measure PostgreSQL too, in a database of its own")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        await measure(f"sqlite:///{directory}/console.db", args.runs)
    await measure("memory://", args.runs)
    if args.postgres:
        async with postgres_database(args.postgres) as url:
            await measure(url, args.runs)


if __name__ == "__main__":
    asyncio.run(main())
