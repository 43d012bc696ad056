"""Governance benchmark: what a limit costs per call, and how fast permits turn
over under contention, on ``local://`` and on ``redis://`` (this machine's Redis).

    .venv/bin/python bench/governance.py                 # all scenarios, a few seconds each
    .venv/bin/python bench/governance.py --quick         # smoke test
    .venv/bin/python bench/governance.py --redis redis://127.0.0.1:6379/0 --json out.json

Scenarios:

- ``overhead``: one caller, ``async with limit.acquire(ctx)`` with an empty
  block, over and over: the time per call, for a cap alone (``concurrency=5``)
  and for a limit with everything (cap, ``rpm``, ``tpm`` with 1,200 tokens a
  call, a breaker). Uncontended: every call gets its permit at once. (The
  windows never fill, but on ``local://`` they are the ``limits`` library's
  memory storage, which keeps an entry per token in a list it inserts into at
  the front: that row's cost grows with the tokens taken in the last minute,
  and this loop takes hundreds of thousands a second.)
- ``contention``: ``--waiters`` callers (200) on ``concurrency=5``, each taking
  the limit over and over with an empty block (owners spread over 10): permits
  handed out per second, the cap's throughput when every release has a waiter.
  On ``redis://`` also with the callers split over two registries (two
  "processes" with connections of their own).
- ``windows``: one admission to ``rpm`` + ``tpm`` windows on Redis (1,200 tokens
  a call, windows never full), by the ``limits`` library's Redis storage
  (redis-py; test, test, hit, hit) and by runyard's one script. This is the
  measurement behind ``redis_windows.py``'s choice.

Each scenario runs for a fixed time (``--seconds``, default 3; ``--quick`` 1)
and the whole run is bounded by it. Nothing talks to any host but 127.0.0.1,
and every Redis key it writes is under a random prefix, deleted at the end.
Nothing here asserts on time: it prints numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _util import pct  # noqa: E402

from runyard.context import RunContext  # noqa: E402
from runyard.governance import Breaker, LimitRegistry  # noqa: E402

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
TOKENS = 1200


@dataclass
class Caller:
    """What a limit needs of a run: an owner, and somewhere to say it waits."""

    owner: str
    waits: int = 0

    async def emit(self, type: str, data: Any = None) -> None:
        self.waits += 1


def caller(owner: str) -> RunContext:
    return cast(RunContext, Caller(owner))


@dataclass
class Row:
    scenario: str
    backend: str
    what: str
    figures: dict[str, float] = field(default_factory=dict)


async def registries(url: str, processes: int, **limit: Any) -> list[LimitRegistry]:
    opened = []
    for _ in range(processes):
        limits = LimitRegistry()
        limits.declare("api", **limit)
        await limits.open(url)
        opened.append(limits)
    return opened


async def timed_loop(seconds: float, once: Callable[[], Awaitable[None]]) -> list[float]:
    """Call ``once`` until ``seconds`` pass; the duration of each call, in seconds."""
    durations: list[float] = []
    deadline = time.perf_counter() + seconds
    while (started := time.perf_counter()) < deadline:
        await once()
        durations.append(time.perf_counter() - started)
    return durations


def latency(durations: list[float]) -> dict[str, float]:
    return {
        "calls": len(durations),
        "mean_us": sum(durations) / len(durations) * 1e6,
        "p50_us": (pct(durations, 50) or 0) * 1e6,
        "p99_us": (pct(durations, 99) or 0) * 1e6,
    }


async def overhead(url: str, backend: str, seconds: float) -> list[Row]:
    kinds = {
        "concurrency=5": {"concurrency": 5},
        "concurrency+rpm+tpm+breaker": {
            "concurrency": 5,
            "rpm": 10**9,
            "tpm": 10**12,
            "breaker": Breaker(failures=5, reset_s=60),
        },
    }
    rows = []
    for what, limit in kinds.items():
        [limits] = await registries(url, 1, **limit)
        try:
            once = taker(limits, TOKENS if "tpm" in limit else 0)
            for _ in range(50):  # warm up: connections, scripts loaded
                await once()
            rows.append(Row("overhead", backend, what, latency(await timed_loop(seconds, once))))
        finally:
            await limits.close()
    return rows


def taker(limits: LimitRegistry, tokens: int) -> Callable[[], Awaitable[None]]:
    """One admission to ``api`` with an empty block."""
    api, ctx = limits.get("api"), caller("o")

    async def once() -> None:
        async with api.acquire(ctx, tokens=tokens):
            pass

    return once


async def contention(url: str, backend: str, seconds: float, waiters: int, processes: int) -> Row:
    opened = await registries(url, processes, concurrency=5)
    granted = 0
    stop = asyncio.Event()

    async def worker(i: int) -> None:
        nonlocal granted
        api, ctx = opened[i % processes].get("api"), caller(f"owner-{i % 10}")
        while not stop.is_set():
            async with api.acquire(ctx):
                granted += 1
                await asyncio.sleep(0)  # hold it across one turn of the loop

    try:
        tasks = [asyncio.create_task(worker(i)) for i in range(waiters)]
        await asyncio.sleep(min(0.5, seconds / 4))  # everyone in line
        start_count, started = granted, time.perf_counter()
        await asyncio.sleep(seconds)
        count, elapsed = granted - start_count, time.perf_counter() - started
        stop.set()
        async with asyncio.timeout(30):
            await asyncio.gather(*tasks)
    finally:
        for limits in opened:
            await limits.close()
    what = f"{waiters} waiters, cap 5" + (f", {processes} processes" if processes > 1 else "")
    return Row("contention", backend, what, {"permits": count, "permits_per_s": count / elapsed})


async def windows(url: str, seconds: float, prefix: str) -> list[Row]:
    from limits import RateLimitItemPerMinute
    from limits.aio.storage import RedisStorage
    from limits.aio.strategies import MovingWindowRateLimiter

    storage = RedisStorage(
        "async+" + url.split("?", 1)[0], implementation="redispy", key_prefix=f"{prefix}limits-library"
    )
    limiter = MovingWindowRateLimiter(storage)
    requests, tokens = RateLimitItemPerMinute(10**9), RateLimitItemPerMinute(10**9)

    async def library() -> None:
        # what a shared Windows on the library would do: test both, then hit both
        if await limiter.test(requests, "api") and await limiter.test(tokens, "api-tokens", cost=TOKENS):
            await limiter.hit(requests, "api")
            await limiter.hit(tokens, "api-tokens", cost=TOKENS)

    [limits] = await registries(url, 1, rpm=10**9, tpm=10**12)
    runyard = taker(limits, TOKENS)
    rows = []
    try:
        for what, once in (("limits library (redis-py), test x2 + hit x2", library), ("runyard script", runyard)):
            for _ in range(20):
                await once()
            rows.append(Row("windows", "redis", what, latency(await timed_loop(seconds, once))))
    finally:
        await limits.close()
        await storage.bridge.get_connection().aclose()
    return rows


async def clean(redis_url: str, prefix: str) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_url.split("?", 1)[0])
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def table(rows: list[Row]) -> str:
    lines = [
        "| scenario | backend | limit | calls / permits | mean µs | p50 µs | p99 µs | permits/s |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        count = cell(row, "calls") or cell(row, "permits")
        lines.append(
            f"| {row.scenario} | {row.backend} | {row.what} | {count} | {cell(row, 'mean_us', 1)}"
            f" | {cell(row, 'p50_us', 1)} | {cell(row, 'p99_us', 1)} | {cell(row, 'permits_per_s')} |"
        )
    return "\n".join(lines)


def cell(row: Row, key: str, digits: int = 0) -> str:
    return f"{row.figures[key]:,.{digits}f}" if key in row.figures else ""


async def measure(args: argparse.Namespace, seconds: float) -> list[Row]:
    prefix = f"runyard-bench-{secrets.token_hex(4)}:"
    redis_url = f"{args.redis}?prefix={prefix}" if args.redis else None
    backends = [("local", "local://")] + ([("redis", redis_url)] if redis_url else [])
    rows: list[Row] = []
    try:
        for backend, url in backends:
            rows += await overhead(url, backend, seconds)
        for backend, url in backends:
            rows.append(await contention(url, backend, seconds, args.waiters, 1))
        if redis_url:
            rows.append(await contention(redis_url, "redis", seconds, args.waiters, 2))
            rows += await windows(redis_url, seconds, prefix)
    finally:
        if args.redis:
            await clean(args.redis, prefix)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="Redis URL (no prefix); '' for local:// only")
    parser.add_argument("--seconds", type=float, default=None, help="how long each scenario runs (default 3)")
    parser.add_argument("--quick", action="store_true", help="1 s per scenario")
    parser.add_argument("--waiters", type=int, default=200, help="callers in the contention scenario")
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args()
    seconds = args.seconds if args.seconds is not None else (1.0 if args.quick else 3.0)
    rows = asyncio.run(measure(args, seconds))
    print(f"# runyard governance benchmark ({platform.python_version()}, {os.cpu_count()} cores, {seconds:g} s each)")
    print()
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps([row.__dict__ for row in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
