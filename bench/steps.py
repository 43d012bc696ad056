"""Durable steps benchmark: what recording a step costs, and how fast a run
replays past recorded ones.

    .venv/bin/python bench/steps.py                         # SQLite (temp file) and memory
    .venv/bin/python bench/steps.py --postgres postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/steps.py --steps 2000 --replay 500 --json bench/results/steps.json

For each store it starts an app in this process (``app.running()``: the real
engine, event log and store, no HTTP) and runs two pipelines:

1. ``record``: ``--steps`` steps one after another, each ``ctx.step`` of a
   function that returns a small dict at once; it times every ``ctx.step``
   call (the step's ``started`` event, the call, the ``done`` event and the
   record in one commit awaited) and prints the median and p99 in µs, beside a
   plain ``await`` of the same function (the floor).
2. ``replay``: ``--replay`` recorded steps, then ``ctx.ask``; once the run waits
   it is answered, and the second execution replays every step from the
   store. It prints the store's ``replay`` read and the time from the
   pipeline's start to the ask returning (every step replayed), in ms.

On PostgreSQL it creates a database of its own and drops it afterwards. It
stops by itself, talks to nobody but 127.0.0.1 and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from _util import pct, postgres_database

from runyard import RunContext, RunStatus, Runyard, Settings

TIMINGS: dict[str, list[float]] = {}


async def tiny(i: int) -> dict[str, int]:
    return {"i": i}


def build_app(store: str) -> Runyard:
    app = Runyard(Settings(store=store))  # type: ignore[call-arg]

    @app.pipeline("record")
    async def record(ctx: RunContext, steps: int) -> int:
        floor, took = [], []
        for i in range(steps):
            started = time.perf_counter()
            await tiny(i)
            floor.append(time.perf_counter() - started)
        for i in range(steps):
            started = time.perf_counter()
            await ctx.step("tiny", tiny, i)
            took.append(time.perf_counter() - started)
        TIMINGS["floor"], TIMINGS["record"] = floor, took
        return steps

    @app.pipeline("replay")
    async def replay(ctx: RunContext, steps: int) -> int:
        started = time.perf_counter()
        for i in range(steps):
            await ctx.step("tiny", tiny, i)
        replayed = time.perf_counter() - started
        await ctx.ask("go on?")
        TIMINGS.setdefault("replayed", []).append(replayed)
        return steps

    return app


async def measure(store: str, steps: int, replay_steps: int) -> dict[str, Any]:
    TIMINGS.clear()
    async with build_app(store).running() as rt:
        run = await rt.create_run("bench", "record", steps)
        done = await rt.wait(run, 600)
        assert done is not None and done.status is RunStatus.SUCCEEDED, done
        run = await rt.create_run("bench", "replay", replay_steps)
        while (await rt.get_run("bench", run.run_id)).status is not RunStatus.WAITING:  # noqa: ASYNC110 - polls another task's store write
            await asyncio.sleep(0.05)
        read_started = time.perf_counter()
        recorded = await rt.store.replay(run.run_id)
        read_s = time.perf_counter() - read_started
        await rt.answer("bench", run.run_id, True)
        done = await rt.wait(await rt.get_run("bench", run.run_id), 600)
        assert done is not None and done.status is RunStatus.SUCCEEDED, done
    record_us = [t * 1e6 for t in TIMINGS["record"]]
    floor_us = [t * 1e6 for t in TIMINGS["floor"]]
    return {
        "store": store.split(":", 1)[0],
        "steps": steps,
        "record_p50_us": round(statistics.median(record_us), 1),
        "record_p99_us": round(pct(record_us, 99) or 0.0, 1),
        "floor_p50_us": round(statistics.median(floor_us), 2),
        "replay_steps": len(recorded.steps),
        "replay_read_ms": round(read_s * 1e3, 2),
        "replay_pipeline_ms": round(TIMINGS["replayed"][-1] * 1e3, 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--replay", type=int, default=1_000)
    parser.add_argument("--postgres", help="also measure PostgreSQL (an admin URL)")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        stores = [] if args.no_memory else ["memory://"]
        stores.append(f"sqlite:///{tmp}/steps.db")
        for store in stores:
            results.append(await measure(store, args.steps, args.replay))
            print(json.dumps(results[-1]), flush=True)
    if args.postgres:
        async with postgres_database(args.postgres) as url:
            results.append(await measure(url, args.steps, args.replay))
            print(json.dumps(results[-1]), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
