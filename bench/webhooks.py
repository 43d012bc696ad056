"""Webhook benchmark: deliveries per second from the outbox to a loopback receiver.

    .venv/bin/python bench/webhooks.py                          # memory and SQLite (temp file)
    .venv/bin/python bench/webhooks.py --postgres postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/webhooks.py --runs 5000 --json bench/results/webhooks.json

For each store it queues ``--runs`` deliveries the way the runtime does (runs
with a webhook created, then finished by an append: the outbox rows are written
with their end), then times one process's ``Webhooks.deliver_forever`` (what a worker runs)
draining them: claim (``CONCURRENCY`` attempts at once), address check,
signature, POST, finish. The
receiver is an asyncio HTTP/1.1 server in the same process on 127.0.0.1 that
answers 204 at once, so the figure is runyard's cost (the receiver's share of
the CPU included), not a network's. It prints deliveries per second and when
the deliveries arrived after the drain began (every one was due then; median and p99).

On PostgreSQL it creates a database of its own and drops it afterwards. It
stops by itself (``--timeout-s``), talks to nobody but 127.0.0.1 and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from _util import pct, postgres_database

from runyard.models import Run, RunStatus, now
from runyard.settings import Settings
from runyard.store import store_from_url
from runyard.store._numbering import cancel_group
from runyard.webhooks.outbox import Webhooks

HOST = "127.0.0.1"


@dataclass
class Receipts:
    """When each delivery arrived (perf_counter), and ``done`` once ``wanted`` did."""

    wanted: int
    done: asyncio.Event = field(default_factory=asyncio.Event)
    times: list[float] = field(default_factory=list)


RECEIVED = Receipts(0)


async def receive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A minimal HTTP/1.1 keep-alive server: read a request, answer 204."""
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            RECEIVED.times.append(time.perf_counter())
            if len(RECEIVED.times) >= RECEIVED.wanted:
                RECEIVED.done.set()
            writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
    writer.close()


async def queue_deliveries(store: Any, runs: int, url: str) -> None:
    """``runs`` finished runs with a webhook: the outbox holds one delivery each."""
    ids = [f"run_{uuid.uuid4().hex}" for _ in range(runs)]
    for run_id in ids:
        await store.create_run(Run(run_id, f"ses_{run_id}", "bench", "nap", RunStatus.QUEUED, None, now(), webhook=url))
    for start in range(0, runs, 500):
        await store.append([cancel_group(run_id, now()) for run_id in ids[start : start + 500]])


async def measure(store_url: str, runs: int, timeout_s: float) -> dict[str, Any]:
    global RECEIVED
    RECEIVED = received = Receipts(runs)
    server = await asyncio.start_server(receive, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    store = store_from_url(store_url)
    await store.open()
    try:
        await queue_deliveries(store, runs, f"http://{HOST}:{port}/hook")
        settings = Settings(store=store_url, webhook_secret="bench", webhook_allow_hosts=HOST)  # type: ignore[call-arg]
        webhooks = Webhooks(settings, store)
        started = time.perf_counter()
        delivering = asyncio.create_task(webhooks.deliver_forever())  # what a worker runs
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(received.done.wait(), timeout_s)
        took = time.perf_counter() - started
        delivering.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await delivering
    finally:
        await store.close()
        server.close()
        await server.wait_closed()
    latencies = [(t - started) * 1e3 for t in received.times]
    return {
        "store": store_url.split(":", 1)[0],
        "runs": runs,
        "delivered": len(received.times),
        "seconds": round(took, 3),
        "deliveries_per_s": round(len(received.times) / took, 1) if took else None,
        "received_p50_ms": round(pct(latencies, 50) or 0.0, 1) if latencies else None,
        "received_p99_ms": round(pct(latencies, 99) or 0.0, 1) if latencies else None,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2_000)
    parser.add_argument("--timeout-s", type=float, default=120)
    parser.add_argument("--postgres", help="also measure PostgreSQL (an admin URL)")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        stores = [] if args.no_memory else ["memory://"]
        stores.append(f"sqlite:///{tmp}/webhooks.db")
        for store in stores:
            results.append(await measure(store, args.runs, args.timeout_s))
            print(json.dumps(results[-1]), flush=True)
    if args.postgres:
        async with postgres_database(args.postgres) as url:
            results.append(await measure(url, args.runs, args.timeout_s))
            print(json.dumps(results[-1]), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
