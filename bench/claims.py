"""What a claim and a creation cost on the PostgreSQL or the SQLite store, as the
queue grows: two builds of runyard measured alternately in one invocation.

For each build (``--base-src``, default /work/main/src, and ``--head-src``,
default this checkout's src/) and each queue depth (``--depths``, default
100,1000,10000), a child process with that build's store:

1. creates a fresh database (migrated by the build's own store);
2. fills it with ``depth`` queued ``ticker`` runs of ``--owners`` owners, each run
   in a session of its own (what ``POST /v1/runs`` without ``session_id``
   makes), inserted with one SQL statement, and ``--running`` runs already
   running (a busy worker's: what a claim must count per owner, not read whole);
3. times ``--claims`` calls of ``store.claim(limit=--limit)``, and after each
   one inserts as many queued runs as it claimed, so the depth stays put;
4. times ``--creates`` calls of ``store.create_run`` (a new session each, as the
   API makes them) with ``--inflight`` in flight: creations/s of one process.

Builds alternate (base, head, base, head, ... ``--repeats`` times) so that the
load of a shared machine falls on both alike; the table gives the medians and
head/base. Run it from the repository root::

    .venv/bin/python bench/claims.py                       # ~2 min
    .venv/bin/python bench/claims.py --depths 100,10000 --repeats 3 --json bench/results/claims.json
    .venv/bin/python bench/claims.py --store sqlite --running 1000 --depths 10,100,1000,10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import add_build_arguments, answered_as_child, builds, median, pct, postgres_database, run_child

if TYPE_CHECKING:
    from runyard.store import Store

FILL = """INSERT INTO runs (run_id, session_id, owner, pipeline, status, input, metadata, created_at,
    attempt, max_attempts)
SELECT 'run_' || $1 || '_' || i, 'ses_' || $1 || '_' || i, 'owner-' || (i % $3), 'ticker', 'queued',
    '{"count": 1}', '{}', extract(epoch from clock_timestamp()), 1, 1
FROM generate_series(1, $2) AS i"""
# the same in SQLite, with the status a parameter (queued runs, or running ones)
SQLITE_FILL = """WITH RECURSIVE i(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM i WHERE n < :count)
INSERT INTO runs (run_id, session_id, owner, pipeline, status, input, metadata, created_at, started_at,
    attempt, max_attempts)
SELECT 'run_' || :batch || '_' || n, 'ses_' || :batch || '_' || n, 'owner-' || (n % :owners), 'ticker', :status,
    '{"count": 1}', '{}', t.now, CASE :status WHEN 'running' THEN t.now END, 1, 1
FROM i, (SELECT (julianday('now') - 2440587.5) * 86400.0 AS now) t"""


# --------------------------------------------------------------------------- child: one build, one depth


async def child(args: argparse.Namespace) -> dict[str, Any]:
    if args.store == "sqlite":
        return await sqlite_child(args)
    import asyncpg

    from runyard.store.postgres import PostgresStore

    async with postgres_database(args.pg_url) as url:
        store = PostgresStore(url + "?pool_max=10")
        await store.open()
        raw = await asyncpg.connect(url)
        filled = 0

        async def fill(n: int) -> None:
            nonlocal filled
            await raw.execute(FILL, str(filled), n, args.owners)
            filled += 1

        async def queued() -> int:
            return int(await raw.fetchval("SELECT count(*) FROM runs WHERE status = 'queued'"))

        try:
            if args.running:
                await raw.execute(FILL.replace("'queued'", "'running'"), "running", args.running, args.owners)
            await fill(args.depth)
            await raw.execute("VACUUM ANALYZE runs")  # as autovacuum would have: index-only scans need it
            return await measure_store(store, fill, queued, args)
        finally:
            await raw.close()
            await store.close()


async def sqlite_child(args: argparse.Namespace) -> dict[str, Any]:
    import sqlite3
    import tempfile

    from runyard.store.sqlite import SQLiteStore

    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(f"sqlite:///{tmp}/claims.db")
        await store.open()
        raw = sqlite3.connect(f"{tmp}/claims.db", isolation_level=None)  # a second writer, between the store's
        raw.execute("PRAGMA busy_timeout = 10000")
        filled = 0

        def insert(count: int, batch: str, status: str) -> None:
            raw.execute(SQLITE_FILL, {"count": count, "batch": batch, "owners": args.owners, "status": status})

        async def fill(n: int) -> None:
            nonlocal filled
            insert(n, str(filled), "queued")
            filled += 1

        async def queued() -> int:
            return int(raw.execute("SELECT count(*) FROM runs WHERE status = 'queued'").fetchone()[0])

        try:
            if args.running:
                insert(args.running, "running", "running")
            await fill(args.depth)
            raw.execute("ANALYZE")
            return await measure_store(store, fill, queued, args)
        finally:
            raw.close()
            await store.close()


async def measure_store(
    store: Store, fill: Callable[[int], Awaitable[None]], queued: Callable[[], Awaitable[int]], args: argparse.Namespace
) -> dict[str, Any]:
    """Times the claims (``fill`` puts back as many queued runs as each took) and then the creations."""
    from runyard.models import Run, RunStatus, Session, new_id, now

    costs = []
    for _ in range(args.claims):
        at = now()
        started = time.perf_counter()
        claimed = await store.claim("bench-worker", args.limit, at, at + 300, pipelines=["ticker"])
        costs.append((time.perf_counter() - started) * 1000)
        if claimed:
            await fill(len(claimed))
    left = await queued()

    async def create(i: int) -> None:
        at = now()
        run = Run(
            new_id("run"),
            new_id("ses"),
            f"creator-{i % args.owners}",
            "ticker",
            RunStatus.QUEUED,
            input={"count": 1},
            created_at=at,
        )
        await store.create_run(run, Session(run.session_id, run.owner, at, at))

    gate = asyncio.Semaphore(args.inflight)

    async def gated(i: int) -> None:
        async with gate:
            await create(i)

    started = time.perf_counter()
    await asyncio.gather(*(gated(i) for i in range(args.creates)))
    create_s = time.perf_counter() - started
    return {
        "claim_p50_ms": median(costs),
        "claim_p90_ms": pct(costs, 90),
        "queued_after": left,
        "creates_per_s": args.creates / create_s,
    }


# --------------------------------------------------------------------------- driver


def measure(src: str, depth: int, args: argparse.Namespace) -> dict[str, Any]:
    return run_child(
        __file__,
        src,
        [
            "--depth", str(depth), "--pg-url", args.pg_url, "--owners", str(args.owners),
            "--claims", str(args.claims), "--limit", str(args.limit), "--creates", str(args.creates),
            "--inflight", str(args.inflight), "--store", args.store, "--running", str(args.running),
        ],
    )  # fmt: skip


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def table(results: dict[str, dict[int, list[dict[str, Any]]]], depths: list[int]) -> str:
    rows = [
        "| queued runs | claim p50 base (ms) | claim p50 head (ms) | head/base"
        " | creations/s base | creations/s head | head/base |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for depth in depths:
        b = results["base"][depth]
        h = results["head"][depth]
        cb = median([r["claim_p50_ms"] for r in b])
        ch = median([r["claim_p50_ms"] for r in h])
        rb = median([r["creates_per_s"] for r in b])
        rh = median([r["creates_per_s"] for r in h])
        rows.append(
            f"| {depth:,} | {fmt(cb)} | {fmt(ch)} | {fmt(ch / cb if cb and ch else None)}"
            f" | {fmt(rb, 0)} | {fmt(rh, 0)} | {fmt(rh / rb if rb and rh else None)} |"
        )
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_build_arguments(ap, repeats=2)
    ap.add_argument("--depths", default="100,1000,10000", help="queued runs, comma-separated")
    ap.add_argument("--store", choices=("postgres", "sqlite"), default="postgres", help="the store measured")
    ap.add_argument("--running", type=int, default=0, help="runs already running when the claims start")
    ap.add_argument("--owners", type=int, default=20, help="owners the queued runs belong to")
    ap.add_argument("--claims", type=int, default=40, help="claims timed per depth")
    ap.add_argument("--limit", type=int, default=8, help="runs each claim takes at most")
    ap.add_argument("--creates", type=int, default=2000, help="create_run calls timed per depth")
    ap.add_argument("--inflight", type=int, default=64, help="create_run calls in flight")
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres", help="maintenance database")
    ap.add_argument("--depth", type=int, default=0, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if answered_as_child(args, child):
        return 0
    both = builds(args)
    depths = [int(d) for d in args.depths.split(",")]
    results: dict[str, dict[int, list[dict[str, Any]]]] = {name: {d: [] for d in depths} for name in both}
    for rep in range(args.repeats):
        for depth in depths:
            for name, src in both.items():
                r = measure(src, depth, args)
                results[name][depth].append(r)
                print(
                    f"[{rep + 1}/{args.repeats}] {name:4} depth {depth:>6,}: claim p50 {fmt(r['claim_p50_ms'])} ms"
                    f" p90 {fmt(r['claim_p90_ms'])} ms (queued after {r['queued_after']:,});"
                    f" {r['creates_per_s']:,.0f} creations/s",
                    flush=True,
                )
    print(f"\n{args.store}: base = {args.base_src}, head = {args.head_src}; {args.owners} owners,")
    print(f"{args.running} runs running, claims of {args.limit},")
    print(f"{args.creates} creations with {args.inflight} in flight, in one process; medians of {args.repeats}\n")
    print(table(results, depths))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
