"""Session streams against run streams: the same conversations, followed either way.

Starts ``runyard demo`` (SQLite) in its own process, then, from this process,
S concurrent sessions each get R ticker runs of N events (interval 0):

- ``session``: each session is followed by ONE ``GET /v1/sessions/{id}/stream``
  opened before its runs are created; its R runs are created at once
  (``multitask: enqueue``, so they execute one after another) and the stream is
  read until it has seen R ``end`` events.
- ``run``: each session creates its runs one after another and follows each
  with ``GET /v1/runs/{id}/stream`` to its end (what a client did before
  session streams).

Reported per mode: events delivered, wall time, delivered events/s, and the
latency of each ``tick`` (arrival minus the ``t`` the pipeline stamped in it):
p50 and p99. Only 127.0.0.1 is used.

    .venv/bin/python bench/session_streams.py                     # 100 x 10 x 100
    .venv/bin/python bench/session_streams.py --sessions 20 --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from typing import Any

import httpx

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from _util import HOST, ServerProcess, free_port, pct, raise_nofile  # noqa: E402


class Tally:
    def __init__(self) -> None:
        self.events = 0
        self.latencies: list[float] = []

    def take(self, event: dict[str, Any], arrived: float) -> None:
        self.events += 1
        if event["type"] == "tick":
            self.latencies.append(arrived - event["data"]["t"])


async def frames(response: httpx.Response) -> Any:
    """The ``data`` of each frame, as the stream delivers them."""
    buffer = b""
    async for chunk in response.aiter_raw():
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            for line in block.split(b"\n"):
                if line.startswith(b"data: "):
                    yield json.loads(line[6:])


def ticker(args: argparse.Namespace, session_id: str, i: int) -> dict[str, Any]:
    marker = f"{session_id}-{i}"
    return {"pipeline": "ticker", "input": {"marker": marker, "count": args.events}, "session_id": session_id}


async def session_mode(client: httpx.AsyncClient, args: argparse.Namespace, tally: Tally) -> None:
    session_id = (await client.post("/v1/sessions", json={})).json()["session_id"]
    async with client.stream("GET", f"/v1/sessions/{session_id}/stream") as response:
        assert response.status_code == 200

        async def read() -> None:  # at once: events wait for no creation
            ends = 0
            async for event in frames(response):
                tally.take(event, time.time())
                if event["type"] == "end":
                    ends += 1
                    if ends == args.runs:
                        return

        reading = asyncio.create_task(read())
        for i in range(args.runs):
            created = await client.post("/v1/runs", json={**ticker(args, session_id, i), "multitask": "enqueue"})
            assert created.status_code == 201, created.text
        await reading


async def run_mode(client: httpx.AsyncClient, args: argparse.Namespace, tally: Tally) -> None:
    session_id = (await client.post("/v1/sessions", json={})).json()["session_id"]
    for i in range(args.runs):
        created = await client.post("/v1/runs", json=ticker(args, session_id, i))
        assert created.status_code == 201, created.text
        async with client.stream("GET", f"/v1/runs/{created.json()['run_id']}/stream") as response:
            async for event in frames(response):
                tally.take(event, time.time())
                if event["type"] == "end":
                    break


async def load(url: str, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    tally = Tally()
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    timeout = httpx.Timeout(60.0)
    scenario = session_mode if mode == "session" else run_mode

    async def one(n: int) -> None:
        headers = {"X-Client-Id": f"bench-{mode}-{n}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=timeout) as client:
            await scenario(client, args, tally)

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(args.sessions))), timeout=args.timeout_s)
    wall = time.perf_counter() - started
    p50, p99 = pct(tally.latencies, 50), pct(tally.latencies, 99)
    return {
        "mode": mode,
        "events": tally.events,
        "wall_s": round(wall, 2),
        "events_per_s": round(tally.events / wall),
        "p50_ms": None if p50 is None else round(p50 * 1000, 1),
        "p99_ms": None if p99 is None else round(p99 * 1000, 1),
    }


def serve(tmpdir: str, port: int, args: argparse.Namespace) -> ServerProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(REPO, "src")
    env.update(
        {
            "RUNYARD_STORE": f"sqlite:///{tmpdir}/bench.db",
            "RUNYARD_MAX_CONCURRENT_RUNS": str(max(64, args.sessions)),
            "RUNYARD_LOG_LEVEL": "WARNING",
            "RUNYARD_MAX_STREAMS_PER_OWNER": "1000",
        }
    )
    cmd = [sys.executable, "-m", "runyard.cli", "demo", "--host", HOST, "--port", str(port)]
    server = ServerProcess(cmd, env, tmpdir, os.path.join(tmpdir, f"server-{port}.log"))
    server.start()
    server.wait_healthy(port, 60)
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--runs", type=int, default=10, help="runs per session")
    parser.add_argument("--events", type=int, default=100, help="ticks per run")
    parser.add_argument("--modes", default="run,session")
    parser.add_argument("--quick", action="store_true", help="a tenth of the sessions")
    parser.add_argument("--timeout-s", type=float, default=600)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    if args.quick:
        args.sessions = max(1, args.sessions // 10)
    raise_nofile()
    results = []
    for mode in args.modes.split(","):
        with tempfile.TemporaryDirectory(prefix="runyard-bench-") as tmpdir:
            port = free_port()
            server = serve(tmpdir, port, args)  # a fresh server (and database) per mode
            try:
                results.append(asyncio.run(load(f"http://{HOST}:{port}", mode, args)))
            finally:
                server.stop()
        print(json.dumps(results[-1]), flush=True)
    size = f"{args.sessions} sessions x {args.runs} runs x {args.events} events"
    print(f"\n| {size} | events | wall s | delivered events/s | tick p50 ms | tick p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        row = [r["mode"] + " streams", r["events"], r["wall_s"], r["events_per_s"], r["p50_ms"], r["p99_ms"]]
        print("| " + " | ".join(str(cell) for cell in row) + " |")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
