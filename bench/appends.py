"""What an event costs the SQLite or the PostgreSQL store when each batch holds
one event of each of many runs (the shape of ``streams.py --scenarios
steady``): two builds of runyard measured alternately in one invocation.

For each build (``--base-src``, default /work/main/src, and ``--head-src``,
default this checkout's src/), a child process with that build's store:

1. creates a fresh database and ``--runs`` running ``ticker`` runs, all held by
   one worker (inserted with one SQL statement);
2. appends ``--batches`` batches through ``store.append``, each of
   ``--batch`` groups of one ``tick`` event (fenced by the worker, as a
   pipeline's are), the runs taken in turn, so that consecutive events are of
   different runs, one batch awaited after the other;
3. reports the process's CPU time and the wall time per event, and the median
   batch's wall time.

On SQLite the store's writer thread does most of the work, so the CPU figure
is mostly its: numbering, the row building, SQLite's inserts and commits. On
PostgreSQL (``--store postgres``, a fresh database each time) it is the
client's side of a fleet worker's append, the server's work not counted:
numbering, encoding the statements' parameters (asyncpg), four round trips a
batch. Run it from the repository root::

    .venv/bin/python bench/appends.py                        # ~1 min
    .venv/bin/python bench/appends.py --batch 600 --repeats 5
    .venv/bin/python bench/appends.py --store postgres --batch 25 --batches 600
    # how an append's cost moves as the events table grows (here to 1.5 M events)
    .venv/bin/python bench/appends.py --batch 50 --batches 30000 --segments 10 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from statistics import median
from typing import TYPE_CHECKING, Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import add_build_arguments, answered_as_child, builds, postgres_database, run_child

if TYPE_CHECKING:
    from runyard.store import Store

WORKER = "bench-worker"
FILL = """WITH RECURSIVE i(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM i WHERE n < :count)
INSERT INTO runs (run_id, session_id, owner, pipeline, status, input, metadata, created_at, started_at,
    attempt, max_attempts, worker_id)
SELECT 'run_' || n, 'ses_' || n, 'owner-' || (n % 20), 'ticker', 'running', '{}', '{}', t.now, t.now, 1, 1, :worker
FROM i, (SELECT (julianday('now') - 2440587.5) * 86400.0 AS now) t"""
# the same in PostgreSQL, where a run's session must exist (its stream numbers the events)
PG_FILL = (
    """INSERT INTO sessions (session_id, owner, created_at, last_activity, metadata)
SELECT 'ses_' || n, 'owner-' || (n % 20), extract(epoch from now()), extract(epoch from now()), '{}'
FROM generate_series(1, $1) n""",
    """INSERT INTO runs (run_id, session_id, owner, pipeline, status, input, metadata, created_at, started_at,
    attempt, max_attempts, worker_id, lease_expires_at)
SELECT 'run_' || n, 'ses_' || n, 'owner-' || (n % 20), 'ticker', 'running', '{}', '{}', extract(epoch from now()),
    extract(epoch from now()), 1, 1, $2, extract(epoch from now()) + 3600
FROM generate_series(1, $1) n""",
)


async def child(args: argparse.Namespace) -> dict[str, Any]:
    if args.store == "postgres":
        return await postgres_child(args)
    import sqlite3
    import tempfile

    from runyard.store.sqlite import SQLiteStore

    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(f"sqlite:///{tmp}/appends.db")
        await store.open()
        raw = sqlite3.connect(f"{tmp}/appends.db", isolation_level=None)
        raw.execute(FILL, {"count": args.runs, "worker": WORKER})
        raw.close()
        return await measure(store, args)


async def postgres_child(args: argparse.Namespace) -> dict[str, Any]:
    import asyncpg

    from runyard.store.postgres import PostgresStore

    async with postgres_database(args.pg_url) as url:
        raw = await asyncpg.connect(url)
        store = PostgresStore(url)
        try:
            await store.open()
            for statement in PG_FILL:
                await raw.execute(statement, *((args.runs, WORKER) if "$2" in statement else (args.runs,)))
            await raw.execute("ANALYZE")  # as autovacuum would have: the plans of a table this size
            return await measure(store, args)
        finally:
            await raw.close()


async def measure(store: Store, args: argparse.Namespace) -> dict[str, Any]:
    """Append ``args.batches`` timed batches to the open ``store``, whose runs
    ``run_1``... are running, held by ``WORKER``; the store is closed after."""
    from runyard.models import EventDraft, Fence, dumps
    from runyard.store import AppendGroup

    fence = Fence(WORKER, 1)
    n = 0

    def batch() -> list[AppendGroup]:
        nonlocal n
        groups = []
        for _ in range(args.batch):
            run_id = f"run_{n % args.runs + 1}"
            n += 1
            data = dumps({"i": n // args.runs, "t": time.time(), "marker": run_id})
            groups.append(AppendGroup(run_id, [EventDraft(run_id, "tick", data, time.time())], None, fence))
        return groups

    try:
        for _ in range(args.runs // args.batch + 1):  # every run's state is known to the writer
            await store.append(batch())
        walls = []
        by_segment = []  # CPU µs an event of each of ``args.segments`` equal parts, in order
        cpu, wall = time.process_time(), time.perf_counter()
        segment_cpu, per_segment = cpu, max(1, args.batches // args.segments)
        for i in range(args.batches):
            groups = batch()
            started = time.perf_counter()
            results = await store.append(groups)
            walls.append(time.perf_counter() - started)
            assert all(isinstance(result, list) for result in results), results[:3]
            if (i + 1) % per_segment == 0:
                now = time.process_time()
                by_segment.append((now - segment_cpu) / (per_segment * args.batch) * 1e6)
                segment_cpu = now
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await store.close()
    events = args.batches * args.batch
    return {
        "cpu_us_per_event": cpu / events * 1e6,
        "wall_us_per_event": wall / events * 1e6,
        "batch_ms": median(walls) * 1e3,
        "cpu_us_per_event_by_segment": by_segment,
    }


def measure_build(src: str, args: argparse.Namespace) -> dict[str, Any]:
    options = ["--runs", str(args.runs), "--batch", str(args.batch), "--batches", str(args.batches)]
    options += ["--segments", str(args.segments), "--store", args.store, "--pg-url", args.pg_url]
    return run_child(__file__, src, options)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_build_arguments(ap, repeats=3)
    ap.add_argument("--runs", type=int, default=1000, help="running runs the events are spread over")
    ap.add_argument("--batch", type=int, default=120, help="events per batch, one per run")
    ap.add_argument("--batches", type=int, default=1000, help="batches timed")
    ap.add_argument(
        "--segments", type=int, default=1, help="also print the CPU an event of this many parts of the run, in order"
    )
    ap.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite", help="the store measured")
    ap.add_argument(
        "--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres", help="maintenance database (postgres)"
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if answered_as_child(args, child):
        return 0
    both = builds(args)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in both}
    for rep in range(args.repeats):
        for name, src in both.items():
            r = measure_build(src, args)
            results[name].append(r)
            print(
                f"[{rep + 1}/{args.repeats}] {name:4}: {r['cpu_us_per_event']:.2f} µs CPU and"
                f" {r['wall_us_per_event']:.2f} µs wall an event; batch p50 {r['batch_ms']:.2f} ms",
                flush=True,
            )
            if args.segments > 1:
                parts = ", ".join(f"{cpu:.1f}" for cpu in r["cpu_us_per_event_by_segment"])
                print(f"      CPU µs an event, part by part as the table grew: {parts}", flush=True)
    print(f"\nbase = {args.base_src}, head = {args.head_src}")
    sizes = f"{args.batches} batches of {args.batch} events of {args.runs} runs"
    print(f"{args.store}: {sizes}; medians of {args.repeats}\n")
    print("| measure | base | head | head/base |\n| --- | ---: | ---: | ---: |")
    for key, label in (("cpu_us_per_event", "CPU µs an event"), ("wall_us_per_event", "wall µs an event")):
        base, head = median([r[key] for r in results["base"]]), median([r[key] for r in results["head"]])
        print(f"| {label} | {base:.2f} | {head:.2f} | {head / base:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
