"""Hostile clients against one runyard server on 127.0.0.1: memory, loop stalls, slowloris.

    .venv/bin/python bench/hostile.py                                  # every scenario, full size
    .venv/bin/python bench/hostile.py --scenarios readers --readers 500
    .venv/bin/python bench/hostile.py --server-env RUNYARD_SSE_PAGE_BYTES=...

Scenarios (each on a fresh ``runyard demo`` server with a SQLite store in a temp dir):

- ``readers``: a finished run with a 16 MiB history (``ticker``, 4,096 events of
  4,000 bytes), then 2,000 concurrent readers each stream it from the start,
  read ``--read-mib`` MiB of it (2 by default: all 2,000 are mid-replay at once,
  and 4 GB cross loopback instead of 32) as fast as one client
  process can, and close. Prints the server's RSS at baseline (the run made, no
  reader yet), its peak while they read, and 3 s / 10 s after the last left.
- ``burst``: 2,000 connections opened at once, each asking for that run's
  stream and reading 64 KiB of it, while another process polls ``GET /healthz``
  every 50 ms on connections of its own. Prints the probes' worst and p99 latency.
- ``slowloris``: 1,500 connections that send half a request's headers (one more
  header byte every 2 s) and 500 that send nothing; how many the server closes,
  and when (the client gives up after ``--slowloris-hold-s``).

The load runs in a separate client process (this file, ``_client``); the driver
samples the server's RSS every 100 ms and keeps the probe on its own. Everything
is bounded by counts and deadlines, and only 127.0.0.1 is ever used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from _util import HOST, RssSampler, ServerProcess, free_port, output_path, pct, raise_nofile, tree_cpu, tree_rss  # noqa: E402

MIB = 1 << 20
SCENARIOS = ("readers", "burst", "slowloris")


# -- the client process -----------------------------------------------------------


async def _open_stream(port: int, run_id: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
    writer.write(
        f"GET /v1/runs/{run_id}/stream HTTP/1.1\r\nHost: bench\r\nX-Client-Id: bench\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    return reader, writer


async def _read(reader: asyncio.StreamReader, limit: int) -> int:
    got = 0
    while got < limit:
        data = await reader.read(1 << 16)
        if not data:
            break
        got += len(data)
    return got


async def _readers(port: int, run_id: str, count: int, read_bytes: int, deadline_s: float) -> dict[str, Any]:
    """``count`` streams, all open before any reads, each read up to ``read_bytes``."""
    opened = asyncio.Semaphore(200)  # connects in flight (the listen backlog is 2,048)
    all_open = asyncio.Event()
    connected = 0
    results: list[int] = []
    failures = 0

    async def one() -> None:
        nonlocal connected, failures
        try:
            async with opened:
                reader, writer = await _open_stream(port, run_id)
            connected += 1
            if connected == count:
                all_open.set()
            await all_open.wait()
            try:
                results.append(await _read(reader, read_bytes))
            finally:
                writer.close()
        except OSError:
            failures += 1
            if connected + failures == count:
                all_open.set()

    started = time.monotonic()
    try:
        async with asyncio.timeout(deadline_s):
            await asyncio.gather(*(one() for _ in range(count)))
    except TimeoutError:
        pass
    return {
        "readers": count,
        "finished": len(results),
        "failed": failures,
        "mib_read": round(sum(results) / MIB, 1),
        "seconds": round(time.monotonic() - started, 2),
    }


async def _slowloris(port: int, half: int, silent: int, hold_s: float) -> dict[str, Any]:
    """``half`` connections trickling headers, ``silent`` sending nothing; when each is closed."""
    start = time.monotonic()
    closed_after: dict[str, list[float]] = {"half": [], "silent": []}
    connects = asyncio.Semaphore(200)

    async def one(kind: str) -> None:
        try:
            async with connects:
                reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            return
        opened = time.monotonic()
        try:
            async with asyncio.timeout(hold_s):
                if kind == "half":
                    writer.write(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n")
                    while True:
                        writer.write(b"X")
                        await writer.drain()
                        try:
                            async with asyncio.timeout(2):
                                if not await reader.read(1024):
                                    break
                        except TimeoutError:
                            continue
                await reader.read()  # until the server closes
            closed_after[kind].append(time.monotonic() - opened)
        except TimeoutError:
            pass  # still open when the client gave up
        except OSError:
            closed_after[kind].append(time.monotonic() - opened)  # reset: closed while a byte was in flight
        finally:
            writer.close()

    await asyncio.gather(*(one("half") for _ in range(half)), *(one("silent") for _ in range(silent)))
    return {
        kind: {
            "opened": n,
            "closed_by_server": len(closed_after[kind]),
            "closed_after_p50_s": _round(pct(closed_after[kind], 50)),
            "closed_after_max_s": _round(max(closed_after[kind], default=None)),
        }
        for kind, n in (("half", half), ("silent", silent))
    } | {"seconds": round(time.monotonic() - start, 1)}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def client_main(spec: dict[str, Any]) -> None:
    raise_nofile()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if spec["mode"] == "readers":
        out = asyncio.run(_readers(spec["port"], spec["run_id"], spec["count"], spec["read_bytes"], spec["deadline_s"]))
    else:
        out = asyncio.run(_slowloris(spec["port"], spec["half"], spec["silent"], spec["hold_s"]))
    print(json.dumps(out), flush=True)


# -- the driver -------------------------------------------------------------------


def _http(port: int, method: str, path: str, body: Any = None, timeout: float = 600) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://{HOST}:{port}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json", "X-Client-Id": "bench"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def _client(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "_client", json.dumps(spec)],
        capture_output=True,
        timeout=timeout_s,
        check=True,
        preexec_fn=raise_nofile,
    )
    result: dict[str, Any] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return result


class Prober:
    """Polls ``GET /healthz`` every ``interval_s`` on a fresh connection; keeps each latency."""

    def __init__(self, port: int, interval_s: float = 0.05) -> None:
        self.port, self.interval_s = port, interval_s
        self.latencies: list[float] = []
        self.connects: list[float] = []  # of which waiting to be accepted (TCP handshake)
        self.first_bytes: list[float] = []  # of which until the answer starts
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with socket.create_connection((HOST, self.port), timeout=30) as s:
                    self.connects.append(time.monotonic() - started)
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
                    s.recv(4096)
                    self.first_bytes.append(time.monotonic() - started)
                    while s.recv(4096):
                        pass
                self.latencies.append(time.monotonic() - started)
            except OSError:
                self.failures += 1
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=35)

    def summary(self) -> dict[str, Any]:
        ms = [x * 1000 for x in self.latencies]
        return {
            "probes": len(ms),
            "probe_failures": self.failures,
            "healthz_p50_ms": _round(pct(ms, 50)),
            "healthz_p99_ms": _round(pct(ms, 99)),
            "healthz_max_ms": _round(max(ms, default=None)),
            "healthz_connect_max_ms": _round(max((x * 1000 for x in self.connects), default=None)),
            "healthz_first_byte_max_ms": _round(max((x * 1000 for x in self.first_bytes), default=None)),
        }


def _make_history(port: int, count: int, payload_bytes: int) -> dict[str, Any]:
    run: dict[str, Any] = _http(
        port,
        "POST",
        "/v1/runs/wait",
        {
            "pipeline": "ticker",
            "input": {"marker": "h", "count": count, "interval_ms": 0, "payload_bytes": payload_bytes},
        },
    )
    assert run["status"] == "succeeded", run
    return run


def _settle_rss(pid: int, seconds: float) -> int:
    time.sleep(seconds)  # a bench, not a test: RSS after a fixed pause is the figure asked for
    return tree_rss(pid)


def scenario(name: str, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="runyard-hostile-")
    env = {
        **os.environ,
        "PYTHONPATH": os.path.join(REPO, "src"),
        "RUNYARD_STORE": f"sqlite:///{tmp}/bench.db",
        "RUNYARD_LOG_LEVEL": "WARNING",
        # the readers all read one run as one owner: the per-owner cap is not what is measured here
        "RUNYARD_MAX_STREAMS_PER_OWNER": str(args.readers + 10),
    }
    for item in args.server_env:
        key, _, value = item.partition("=")
        env[key] = value
    cmd = [sys.executable, "-m", "runyard.cli", "demo", "--host", HOST, "--port", str(port)]
    if args.server_wrapper:
        cmd[1:3] = [args.server_wrapper]
    server = ServerProcess(cmd, env, tmp, os.path.join(tmp, "server.log"))
    server.start()
    try:
        server.wait_healthy(port, 60)
        started_rss = tree_rss(server.pid)
        if name == "slowloris":
            spec = {"mode": "slowloris", "port": port, "half": 1500, "silent": 500, "hold_s": args.slowloris_hold_s}
            with Prober(port, 0.2) as prober:
                result = _client(spec, args.slowloris_hold_s + 60)
            return {"rss_started_mib": started_rss // MIB, **result, **prober.summary()}
        run = _make_history(port, args.history_events, args.payload_bytes)
        history_mib = round(args.history_events * (args.payload_bytes + 100) / MIB, 1)
        baseline = _settle_rss(server.pid, 1)
        count = args.readers if name == "readers" else args.burst
        read_bytes = int(args.read_mib * MIB) if name == "readers" else 64 * 1024
        spec = {
            "mode": "readers",
            "port": port,
            "run_id": run["run_id"],
            "count": count,
            "read_bytes": read_bytes,
            "deadline_s": args.deadline_s,
        }
        sampler = RssSampler(server.pid).start()
        cpu_before = tree_cpu(server.pid)
        with Prober(port) as prober:
            result = _client(spec, args.deadline_s + 60)
        peak = sampler.stop()
        result["server_cpu_s"] = round(tree_cpu(server.pid) - cpu_before, 1)
        after3 = _settle_rss(server.pid, 3)
        after10 = _settle_rss(server.pid, 7)
        return {
            "history_mib": history_mib,
            **result,
            "rss_started_mib": started_rss // MIB,
            "rss_baseline_mib": baseline // MIB,
            "rss_peak_mib": peak // MIB,
            "rss_after_3s_mib": after3 // MIB,
            "rss_after_10s_mib": after10 // MIB,
            **prober.summary(),
        }
    finally:
        server.stop()
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            subprocess.run(["rm", "-rf", tmp], check=False)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "_client":
        client_main(json.loads(sys.argv[2]))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset of " + ",".join(SCENARIOS))
    p.add_argument("--readers", type=int, default=2000, help="readers: concurrent streams [2000]")
    p.add_argument("--read-mib", type=float, default=2, help="readers: MiB each reader reads before closing [2]")
    p.add_argument("--burst", type=int, default=2000, help="burst: connections opened at once [2000]")
    p.add_argument("--history-events", type=int, default=4096, help="events in the finished run [4096]")
    p.add_argument("--payload-bytes", type=int, default=4000, help="ticker pad per event [4000]")
    p.add_argument("--deadline-s", type=float, default=300, help="the client gives up after this long [300]")
    p.add_argument("--slowloris-hold-s", type=float, default=40, help="slowloris: the client gives up after [40]")
    p.add_argument("--server-env", action="append", default=[], help="KEY=VALUE for the server (repeatable)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (server log, database)")
    p.add_argument("--server-wrapper", help="a script run instead of `-m runyard.cli` (a profiler, say)")
    p.add_argument("--json", type=output_path, help="write every figure to this file")
    args = p.parse_args()
    raise_nofile()
    results = {}
    for name in args.scenarios.split(","):
        print(f"== {name}", flush=True)
        results[name] = scenario(name, args)
        print(json.dumps(results[name], indent=1), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
