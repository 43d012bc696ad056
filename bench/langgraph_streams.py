"""The LangGraph API's streams against runyard's own: what the translation costs.

Starts ``runyard demo`` (SQLite) in its own process, runs one ``ticker`` run of
N events (interval 0) to its end, then replays that run's whole stream R times
each way, one reader at a time:

- ``v1``: ``GET /v1/runs/{id}/stream`` (frames as the store keeps them);
- ``langgraph-custom``: ``GET /langgraph/threads/{t}/runs/{id}/stream`` in
  ``custom`` mode (one part per tick, each event parsed and re-encoded);
- ``langgraph-all``: the same in every mode (``values``, ``updates``,
  ``messages-tuple``, ``custom``, ``events``, ``debug``: three parts per tick).

Reported per way: the median replay time, events/s, and the server's CPU
seconds per replay. Only 127.0.0.1 is used.

    .venv/bin/python bench/langgraph_streams.py                 # 20,000 events, 5 replays each
    .venv/bin/python bench/langgraph_streams.py --events 2000 --replays 3
"""

from __future__ import annotations

import argparse
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
from _util import HOST, ServerProcess, free_port, median, tree_cpu  # noqa: E402

HEADERS = {"X-Client-Id": "bench-langgraph"}
ALL_MODES = ["values", "updates", "messages-tuple", "custom", "events", "debug"]


def serve(tmpdir: str, port: int) -> ServerProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(REPO, "src")
    env.update({"RUNYARD_STORE": f"sqlite:///{tmpdir}/bench.db", "RUNYARD_LOG_LEVEL": "WARNING"})
    cmd = [sys.executable, "-m", "runyard.cli", "demo", "--host", HOST, "--port", str(port)]
    server = ServerProcess(cmd, env, tmpdir, os.path.join(tmpdir, f"server-{port}.log"))
    server.start()
    server.wait_healthy(port, 60)
    return server


def finished_run(client: httpx.Client, events: int) -> dict[str, Any]:
    body = {"pipeline": "ticker", "input": {"marker": "lg", "count": events, "interval_ms": 0}}
    run: dict[str, Any] = client.post("/v1/runs/wait", json=body, timeout=600).json()
    assert run["status"] == "succeeded", run
    return run


def replay(client: httpx.Client, path: str, params: dict[str, Any]) -> tuple[float, int]:
    """Seconds to read the whole stream, and the bytes read."""
    started = time.perf_counter()
    size = 0
    with client.stream("GET", path, params=params, timeout=600) as response:
        response.raise_for_status()
        for chunk in response.iter_bytes():
            size += len(chunk)
    return time.perf_counter() - started, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--replays", type=int, default=5)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="runyard-bench-") as tmpdir:
        port = free_port()
        server = serve(tmpdir, port)
        try:
            with httpx.Client(base_url=f"http://{HOST}:{port}", headers=HEADERS) as client:
                run = finished_run(client, args.events)
                thread = f"/langgraph/threads/{run['session_id']}/runs/{run['run_id']}/stream"
                ways = {
                    "v1": (f"/v1/runs/{run['run_id']}/stream", {}),
                    "langgraph-all": (thread, {"stream_mode": ALL_MODES}),
                    "langgraph-custom": (thread, {"stream_mode": "custom"}),
                    "langgraph-values": (thread, {"stream_mode": "values"}),
                }
                results = []
                for way, (path, params) in ways.items():
                    times, cpus, size = [], [], 0
                    for _ in range(args.replays):
                        cpu = tree_cpu(server.pid)
                        seconds, size = replay(client, path, params)
                        cpus.append(tree_cpu(server.pid) - cpu)
                        times.append(seconds)
                    wall = median(times) or 0.0
                    results.append(
                        {
                            "way": way,
                            "events": run["last_seq"],
                            "replay_s": round(wall, 3),
                            "events_per_s": round(run["last_seq"] / wall) if wall else None,
                            "server_cpu_s": round(median(cpus) or 0.0, 3),
                            "bytes": size,
                        }
                    )
                    print(json.dumps(results[-1]), flush=True)
        finally:
            server.stop()
    print(f"\n| {args.events} ticks, median of {args.replays} | replay s | events/s | server CPU s | bytes |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['way']} | {r['replay_s']} | {r['events_per_s']} | {r['server_cpu_s']} | {r['bytes']} |")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
