"""Disk benchmark: the worst run the contract allows, on the SQLite default, from the
cap that stops it to the sweep that gives its space back.

    .venv/bin/python bench/disk.py                     # the 1,000,000 x 64 KiB ticker, 256 MiB cap
    .venv/bin/python bench/disk.py --quick             # 32 MiB cap: a smoke test of a few seconds
    .venv/bin/python bench/disk.py --json bench/results/disk.json

What it does, in this one process (so that it can time the SQLite writer thread):

1. serves the demo app with uvicorn on a free port of 127.0.0.1, on a new SQLite
   file in a temp dir, with ``RUNYARD_MAX_RUN_BYTES`` = ``--cap-mib``, a short
   retention (``--retention-s``) and sweep interval (1 s);
2. starts the big run: ``POST /v1/runs`` ``ticker`` with ``count`` 1,000,000 and
   ``payload_bytes`` 65,536 (the contract's limits), and a small ``ticker``
   (``--probe-count`` ticks of 100 bytes, 5 ms apart) that keeps writing meanwhile;
3. waits for the big run to end: its status and code, how long it took, how
   many ticks it stored (bytes written, MiB/s), the database + WAL sizes then;
4. waits for the sweep to delete it and for the WAL to be truncated, while a
   client thread creates a session every 20 ms (each a write through the writer;
   from the moment the big run ended, so the seconds before the sweep give the
   same figure without a sweep):
   the database + WAL sizes after, how long the sweep took, and the longest
   writer stall during it, measured two ways: the longest job of the SQLite
   writer thread (a batch of writes, an incremental_vacuum step, a checkpoint:
   what any write may wait behind) and the slowest ``POST /v1/sessions`` answer.

``--store-level`` measures the sweep alone, on the store (no server): a run of
``--cap-mib`` of 64 KiB events swept while another task appends one small event
at a time; it prints the sweep's time, the files before and after, and the
slowest append meanwhile. It uses only the store's public methods, so it also
runs on an older runyard, for a before/after on one machine:

    PYTHONPATH=/path/to/older/src .venv/bin/python bench/disk.py --store-level
    .venv/bin/python bench/disk.py --store-level --postgres postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/disk.py --store-level --small-runs 10000   # many small runs instead

It stops by itself (every wait is bounded by ``--timeout-s``), deletes its temp
dir, talks to nobody but 127.0.0.1 and asserts nothing: it prints numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from runyard import Runyard
from runyard.demo import register_demo_pipelines
from runyard.settings import Settings
from runyard.store.sqlite import connection as sqlite_connection
from runyard.store.sqlite import retention as sqlite_retention

HOST = "127.0.0.1"
MiB = 1024 * 1024


@dataclass
class WriterJobs:
    """Every job of the SQLite writer thread: (kind, start, seconds)."""

    jobs: list[tuple[str, float, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def timed(self, kind: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def job(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                with self.lock:
                    self.jobs.append((kind, start, time.perf_counter() - start))

        return job

    def between(self, start: float, end: float) -> list[tuple[str, float, float]]:
        with self.lock:
            return [job for job in self.jobs if start <= job[1] <= end]


def instrument(jobs: WriterJobs) -> None:
    """Time what runs in the writer thread, and note when the sweep deletes a chunk."""
    sqlite_connection._commit = jobs.timed("batch", sqlite_connection._commit)  # type: ignore[assignment]
    sqlite_retention._vacuum_step = jobs.timed("vacuum", sqlite_retention._vacuum_step)  # type: ignore[assignment]
    sqlite_retention._checkpoint = jobs.timed("checkpoint", sqlite_retention._checkpoint)  # type: ignore[assignment]
    chunk = sqlite_retention._delete_event_chunk

    def noted_chunk(db: sqlite3.Connection, run_pk: int) -> bool:
        with jobs.lock:
            jobs.jobs.append(("chunk", time.perf_counter(), 0.0))
        return chunk(db, run_pk)

    sqlite_retention._delete_event_chunk = noted_chunk  # type: ignore[assignment]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def serving(settings: Settings, timeout_s: float) -> Iterator[str]:
    app = register_demo_pipelines(Runyard(settings, title="bench disk"))
    config = uvicorn.Config(app.http(), host=HOST, port=settings.port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise SystemExit("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://{HOST}:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)


def call(url: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"X-Client-Id": "bench-disk"})
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # the server is on 127.0.0.1
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def create_ticker(base: str, **input: Any) -> dict[str, Any]:
    status, run = call(f"{base}/v1/runs", "POST", {"pipeline": "ticker", "input": {"marker": "disk", **input}})
    if status != 201:
        raise SystemExit(f"POST /v1/runs answered {status}")
    created: dict[str, Any] = run
    return created


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what} after {timeout_s:g} s")
        time.sleep(every_s)


def sizes(path: Path) -> tuple[int, int]:
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size, wal.stat().st_size if wal.exists() else 0


class Prober:
    """Creates a session every ``every_s`` (a write through the writer thread that
    leaves nothing for the sweep) and keeps each answer's latency."""

    def __init__(self, base: str, every_s: float = 0.02) -> None:
        self.base, self.every_s = base, every_s
        self.latencies: list[tuple[float, float]] = []  # (start, seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            start = time.perf_counter()
            call(f"{self.base}/v1/sessions", "POST", {})
            self.latencies.append((start, time.perf_counter() - start))

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def sweep_alone(url: str, files: Callable[[], tuple[int, int]], cap: int) -> dict[str, Any]:
    """The sweep of one ``cap``-byte run of 64 KiB events, with an appender beside it;
    ``files``: the sizes to report before and after."""
    from runyard.models import EventDraft, Run, RunStatus, RunUpdate
    from runyard.store import AppendGroup, store_from_url

    store = store_from_url(url)
    await store.open()
    try:
        big, other = (
            Run(f"run_{name}", f"ses_{name}", "o", "ticker", RunStatus.RUNNING, {}, created_at=1.0)
            for name in ("big", "other")
        )
        for run in (big, other):
            await store.create_run(run)
        # random bytes: PostgreSQL compresses a pad of one letter to almost nothing;
        # one MiB short of the cap, so that the run fits under it where there is one
        pad = os.urandom(65_536)
        for _ in range(cap // (16 * len(pad)) - 1):
            await store.append([AppendGroup(big.run_id, [EventDraft(big.run_id, "tick", pad, 1.0)] * 16)])
        await store.append([AppendGroup(big.run_id, [], RunUpdate(RunStatus.SUCCEEDED, finished_at=2.0))])
        database, wal = files()
        latencies: list[float] = []
        sweeping = True

        async def append_beside() -> None:
            while sweeping:
                start = time.perf_counter()
                await store.append([AppendGroup(other.run_id, [EventDraft(other.run_id, "tick", b"{}", 1.0)])])
                latencies.append(time.perf_counter() - start)
                await asyncio.sleep(0.001)

        appender = asyncio.create_task(append_beside())
        start = time.perf_counter()
        swept = await store.sweep_runs(10.0)
        took = time.perf_counter() - start
        sweeping = False
        await appender
        after_db, after_wal = files()
    finally:
        await store.close()
    return {
        "swept": swept,
        "sweep_s": round(took, 2),
        "db_bytes_before": database,
        "wal_bytes_before": wal,
        "db_bytes_after": after_db,
        "wal_bytes_after": after_wal,
        "appends_meanwhile": len(latencies),
        "slowest_append_ms": round(max(latencies, default=0.0) * 1000, 1),
        "appends_ms": spread(latencies),
    }


async def on_postgres(server: str, cap: int) -> dict[str, Any]:
    """``sweep_alone`` in a database of its own on ``server`` (dropped after), without
    file sizes: PostgreSQL reuses the space (autovacuum), it does not shrink files."""
    import secrets
    from urllib.parse import urlsplit

    import asyncpg

    parts = urlsplit(server)
    if parts.hostname not in (HOST, "localhost"):
        raise SystemExit("--postgres must be on 127.0.0.1")
    name = f"runyard_bench_disk_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = parts._replace(path=f"/{name}").geturl()
    try:
        figures = await sweep_alone(url, lambda: (0, 0), cap)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    for key in ("db_bytes_before", "wal_bytes_before", "db_bytes_after", "wal_bytes_after"):
        figures.pop(key, None)
    return figures


async def many_small_runs(url: str, runs: int) -> dict[str, Any]:
    """The sweep of ``runs`` finished runs of 3 small events each: what cutting the
    sweep into writes per run costs when runs are many and small."""
    from runyard.models import EventDraft, Run, RunStatus, RunUpdate
    from runyard.store import AppendGroup, store_from_url

    store = store_from_url(url)
    await store.open()
    try:
        made = [Run(f"run_{i}", f"ses_{i}", "o", "ticker", RunStatus.RUNNING, {}, created_at=1.0) for i in range(runs)]
        for run in made:
            await store.create_run(run)
        done = RunUpdate(RunStatus.SUCCEEDED, finished_at=2.0)
        for start in range(0, runs, 500):
            await store.append(
                [
                    AppendGroup(r.run_id, [EventDraft(r.run_id, "tick", b'{"i":1}', 1.0)] * 3, done)
                    for r in made[start : start + 500]
                ]
            )
        began = time.perf_counter()
        swept = await store.sweep_runs(10.0)
        took = time.perf_counter() - began
    finally:
        await store.close()
    return {"small_runs_swept": swept, "sweep_s": round(took, 2)}


def store_level(args: argparse.Namespace, cap: int) -> int:
    if args.small_runs:
        with tempfile.TemporaryDirectory(prefix="runyard-bench-disk-") as tmp:
            figures = asyncio.run(many_small_runs(f"sqlite:///{tmp}/bench.db", args.small_runs))
    elif args.postgres:
        figures = asyncio.run(on_postgres(args.postgres, cap))
    else:
        with tempfile.TemporaryDirectory(prefix="runyard-bench-disk-") as tmp:
            db_path = Path(tmp) / "bench.db"
            figures = asyncio.run(sweep_alone(f"sqlite:///{db_path}", lambda: sizes(db_path), cap))
    figures["load_average"] = round(os.getloadavg()[0], 2)
    for name, value in figures.items():
        print(f"{name:<22}{value}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cap-mib", type=int, default=256, help="RUNYARD_MAX_RUN_BYTES in MiB (default 256)")
    parser.add_argument("--quick", action="store_true", help="a 32 MiB cap")
    parser.add_argument("--retention-s", type=float, default=5.0, help="RUNYARD_RETENTION_S (default 5)")
    parser.add_argument("--probe-count", type=int, default=20_000, help="ticks of the small run writing meanwhile")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="bound on every wait (default 300)")
    parser.add_argument("--json", type=Path, help="write every figure here too")
    parser.add_argument("--store-level", action="store_true", help="the sweep alone, on the store (see above)")
    parser.add_argument(
        "--small-runs", type=int, metavar="N", help="with --store-level: sweep N small runs instead (SQLite)"
    )
    parser.add_argument(
        "--postgres", metavar="URL", help="with --store-level: on this PostgreSQL server (127.0.0.1) instead of SQLite"
    )
    args = parser.parse_args()
    cap = (32 if args.quick else args.cap_mib) * MiB
    if args.store_level:
        return store_level(args, cap)

    load = round(os.getloadavg()[0], 2)  # the machine is shared: say how busy it was
    jobs = WriterJobs()
    instrument(jobs)
    with tempfile.TemporaryDirectory(prefix="runyard-bench-disk-") as tmp:
        db_path = Path(tmp) / "bench.db"
        settings = Settings(
            store=f"sqlite:///{db_path}",
            port=free_port(),
            max_run_bytes=cap,
            retention_s=args.retention_s,
            sweep_interval_s=1.0,
            log_level="WARNING",
        )
        with serving(settings, args.timeout_s) as base:
            figures = measure(base, db_path, jobs, args)
    figures["cap_bytes"] = cap
    figures["load_average"] = load
    print_figures(figures)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


def measure(base: str, db_path: Path, jobs: WriterJobs, args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    started = time.perf_counter()
    big = create_ticker(base, count=1_000_000, payload_bytes=65_536)
    probe = create_ticker(base, count=args.probe_count, payload_bytes=100, interval_ms=5)

    def finished() -> dict[str, Any] | None:
        _, run = call(f"{base}/v1/runs/{big['run_id']}")
        return run if run and run["status"] not in ("queued", "running") else None

    ended = wait_for("the big run to end", finished, args.timeout_s)
    took = time.perf_counter() - started
    database, wal = sizes(db_path)
    ticks = ended["last_seq"] - 4  # the claim's status; then error, status, end
    figures.update(
        status=ended["status"],
        code=(ended.get("error") or {}).get("code"),
        ended_after_s=round(took, 2),
        ticks_stored=ticks,
        bytes_written=ticks * 65_536,
        mib_per_s=round(ticks * 65_536 / MiB / took, 1),
        db_bytes_before=database,
        wal_bytes_before=wal,
    )
    with Prober(base) as prober:
        swept = time.perf_counter()

        def gone() -> bool:
            return call(f"{base}/v1/runs/{big['run_id']}")[0] == 404

        wait_for("the sweep to delete the big run", gone, args.timeout_s)
        # truncated to 0, the WAL grows again with the next writes (the small ticker's):
        # only the truncation brings it under 1 MiB (journal_size_limit is 64 MiB)
        wait_for("the WAL to be truncated", lambda: sizes(db_path)[1] < MiB, args.timeout_s)
        done = time.perf_counter()

        def checkpointed() -> bool:  # a job is noted when it ends, a moment after the WAL shrank
            return any(job[0] == "checkpoint" for job in jobs.between(swept, done))

        wait_for("the checkpoint to be noted", checkpointed, args.timeout_s)
    chunks = [job for job in jobs.between(swept, done) if job[0] == "chunk"]
    sweep_start = chunks[0][1] if chunks else swept
    during = [job for job in jobs.between(sweep_start, done) if job[0] != "chunk"]
    database, wal = sizes(db_path)
    longest = max(during, key=lambda job: job[2], default=("none", 0.0, 0.0))
    answers = [seconds for start, seconds in prober.latencies if start >= sweep_start]
    before = [seconds for start, seconds in prober.latencies if start < sweep_start]  # the same load, no sweep
    figures.update(
        db_bytes_after=database,
        wal_bytes_after=wal,
        sweep_s=round(done - sweep_start, 2),
        sweep_chunks=len(chunks),
        writer_jobs_during_sweep=len(during),
        longest_writer_job_ms=round(longest[2] * 1000, 1),
        longest_writer_job_kind=longest[0],
        writer_jobs_ms={kind: spread([job[2] for job in during if job[0] == kind]) for kind in KINDS},
        slowest_write_request_during_sweep_ms=round(max(answers, default=0.0) * 1000, 1),
        posts_during_sweep=len(answers),
        slowest_write_request_before_sweep_ms=round(max(before, default=0.0) * 1000, 1),
        posts_before_sweep=len(before),
        probe_run=probe["run_id"],
    )
    return figures


KINDS = ("batch", "vacuum", "checkpoint")


def spread(seconds: list[float]) -> dict[str, float]:
    """Count, median, p99 and max of ``seconds``, in ms."""
    if not seconds:
        return {"n": 0}
    ordered = sorted(seconds)

    def at(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000, 1)

    return {"n": len(ordered), "p50": at(0.5), "p99": at(0.99), "max": round(ordered[-1] * 1000, 1)}


def print_figures(figures: dict[str, Any]) -> None:
    print(f"load average at the start       {figures['load_average']}")
    print(f"cap (RUNYARD_MAX_RUN_BYTES)      {figures['cap_bytes'] / MiB:.0f} MiB")
    print(f"big run                          {figures['status']} / {figures['code']}")
    print(f"ended after                      {figures['ended_after_s']} s")
    print(
        f"stored                           {figures['ticks_stored']} ticks,"
        f" {figures['bytes_written'] / MiB:.1f} MiB ({figures['mib_per_s']} MiB/s)"
    )
    print(
        f"before the sweep                 db {figures['db_bytes_before'] / MiB:.1f} MiB,"
        f" WAL {figures['wal_bytes_before'] / MiB:.1f} MiB"
    )
    print(
        f"after the sweep                  db {figures['db_bytes_after'] / MiB:.2f} MiB,"
        f" WAL {figures['wal_bytes_after'] / MiB:.2f} MiB"
    )
    print(f"sweep (delete, vacuum, truncate) {figures['sweep_s']} s, {figures['sweep_chunks']} chunks")
    print(
        f"longest writer job in the sweep  {figures['longest_writer_job_ms']} ms ({figures['longest_writer_job_kind']})"
    )
    for kind, ms in figures["writer_jobs_ms"].items():
        print(f"  {kind:<31}{ms}")
    print(
        f"slowest POST /v1/sessions then   {figures['slowest_write_request_during_sweep_ms']} ms"
        f" ({figures['posts_during_sweep']} requests)"
    )
    print(
        f"  the same in the seconds before  {figures['slowest_write_request_before_sweep_ms']} ms"
        f" ({figures['posts_before_sweep']} requests, no sweep)"
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
