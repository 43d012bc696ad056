"""Fan-out of a few runs to thousands of streams held by several API processes
(PostgreSQL + Redis), bounded in count and time: the simulation behind the
fan-out part of docs/scaling.md.

One worker executes ``--runs`` ``ticker`` runs (one tick every ``--interval-ms``
for ``--ticks`` ticks); ``--apis`` API processes each hold ``--streams`` streams
of those same runs (spread evenly over them; with as many runs as streams in
all, each run has one stream), read by one client process per
API process. The runs are created with ``after_s`` so that every stream is open
before the first tick: every tick is then live, and its latency (the client's
clock minus the ``t`` the worker stamped) is the fan-out's.

It prints what the capacity model needs: events published (once per tick,
whatever the number of streams), events delivered, latency p50/p99/max, each API
process's CPU per delivered event and its memory per open stream, Redis's CPU,
the clients' CPU, and every stream's completeness (gaps, missing ends). The
first ticks (``--settle``) are quoted apart: each is every stream's first live
event, delivered to all of them at once. Run it
from the repository root::

    .venv/bin/python bench/fanout.py                                   # 2 x 2,000 streams, ~1 min
    .venv/bin/python bench/fanout.py --apis 3 --streams 1500 --runs 20 --json bench/results/fanout.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from _util import pct, raise_nofile, tree_rss  # noqa: E402
from scaleout import Config, Deployment, proc_cpu, service_pids, tree_cpus  # noqa: E402

OWNER = "fan"


# --------------------------------------------------------------------------- client: one API process's streams


async def client(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    runs: list[str] = args.run_ids.split(",")
    headers = {"X-Client-Id": OWNER}
    lat: list[float] = []  # ticks from the --settle-th on
    settling: list[float] = []  # the first ones: every stream's first live event, all at once
    totals = {"ticks": 0, "gaps": 0, "missing_end": 0, "errors": 0, "opened": 0}
    opened = asyncio.Event()
    gate = asyncio.Semaphore(200)
    deadline = time.monotonic() + args.deadline_s

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        run_id = runs[(args.offset + i) % len(runs)]
        last, ended, n = 0, False, 0
        try:
            async with gate:
                resp = await session.get(f"{args.api}/v1/runs/{run_id}/stream", headers=headers)
            if resp.status != 200:
                totals["errors"] += 1
                return
            totals["opened"] += 1
            if totals["opened"] == args.streams:
                opened.set()
            buf = b""
            async with resp:
                while not ended and time.monotonic() < deadline:
                    chunk = await resp.content.readany()
                    if not chunk:
                        break
                    at = time.time()
                    buf += chunk
                    *frames, buf = buf.split(b"\n\n")
                    for frame in frames:
                        if not frame.startswith(b"id: "):
                            continue  # a heartbeat
                        seq = int(frame[4 : frame.index(b"\n")])
                        totals["gaps"] += seq != last + 1
                        last = seq
                        if b"event: tick" in frame:
                            n += 1
                            if n <= args.settle or n % args.sample == 0:
                                tick = json.loads(frame[frame.index(b"data: ") + 6 :])["data"]
                                (lat if tick["i"] >= args.settle else settling).append(at - tick["t"])
                        elif b"event: end" in frame:
                            ended = True
        except (TimeoutError, aiohttp.ClientError, ValueError):
            totals["errors"] += 1
        totals["ticks"] += n
        totals["missing_end"] += not ended

    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=args.deadline_s)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        tasks = [asyncio.create_task(one(session, i)) for i in range(args.streams)]
        try:
            await asyncio.wait_for(opened.wait(), args.deadline_s)
            print("OPEN", flush=True)
        except TimeoutError:
            print("OPEN-TIMEOUT", flush=True)
        await asyncio.gather(*tasks)
    return {**totals, "lat": lat, "settling": settling}


# --------------------------------------------------------------------------- driver


def post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json", "X-Client-Id": OWNER}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return dict(json.loads(resp.read()))


def deployment_args(args: argparse.Namespace) -> argparse.Namespace:
    """What scaleout's Deployment reads (steady_streams: every run executes at once)."""
    env = [
        f"RUNYARD_MAX_STREAMS_PER_OWNER={args.apis * args.streams + 100}",
        "RUNYARD_SSE_HEARTBEAT_S=15",
        *args.server_env,
    ]
    return argparse.Namespace(
        app="_scaleapp:app", startup_timeout=60, pg_url=args.pg_url, redis_url=args.redis_url, server_env=env,
        steady_streams=args.runs, burst_runs=64, busy_owners=64, src=os.path.join(REPO, "src"), keep_failed=False,
    )  # fmt: skip


def redis_stats(url: str) -> dict[str, float]:
    import redis

    r = redis.Redis.from_url(url, socket_timeout=5)
    try:
        stats = r.info("commandstats")
        return {name: float(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("publish", "spublish")}
    finally:
        r.close()


def simulate(args: argparse.Namespace) -> dict[str, Any]:
    cfg = Config("fanout", f"{args.apis} API + 1 worker", "pg", apis=args.apis, workers=1)
    dargs = deployment_args(args)
    services = service_pids(dargs)
    with Deployment(cfg, dargs) as dep:
        apis = [m for m in dep.members if m.role == "api"]
        worker = next(m for m in dep.members if m.role == "worker")
        lead_s = 8 + args.apis * args.streams / 400 + args.runs / 100  # every stream opens before the first tick
        body = {"pipeline": "ticker", "after_s": lead_s}
        with ThreadPoolExecutor(16) as pool:
            runs = list(
                pool.map(
                    lambda i: post_json(
                        f"{apis[i % len(apis)].url}/v1/runs",
                        {**body, "input": {"marker": f"m{i}", "count": args.ticks, "interval_ms": args.interval_ms}},
                    )["run_id"],
                    range(args.runs),
                )
            )
        created = time.monotonic()
        baseline = {m.name: tree_rss(m.server.pid) for m in apis}
        deadline_s = lead_s + args.ticks * args.interval_ms / 1000 + 30
        client_argv = [
            "--run-ids", ",".join(runs), "--streams", str(args.streams), "--sample", str(args.sample),
            "--settle", str(args.settle),
            "--deadline-s", str(deadline_s),
        ]  # fmt: skip
        clients = [
            subprocess.Popen(
                [sys.executable, __file__, "--client", "--api", m.url, "--offset", str(k * args.streams), *client_argv],
                stdout=subprocess.PIPE,
                text=True,
            )
            for k, m in enumerate(apis)
        ]
        for c in clients:
            assert c.stdout is not None
            print(f"  client: {c.stdout.readline().strip()}", flush=True)
        open_s = time.monotonic() - created
        held = {m.name: tree_rss(m.server.pid) for m in apis}
        wait = lead_s - open_s
        if wait < 1:
            print(f"  warning: streams took {open_s:.1f} s to open, past the first tick ({lead_s:.0f} s)")
        time.sleep(max(0.0, wait - 0.5))
        procs = {m.name: psutil.Process(m.server.pid) for m in [*apis, worker]}
        cpu0 = {name: proc_cpu(p) or 0.0 for name, p in procs.items()}
        svc0 = {name: sum(tree_cpus(pid).values()) for name, pid in services.items()}
        redis0 = redis_stats(args.redis_url)
        t0 = time.monotonic()
        kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        outs = []
        for c in clients:
            out, _ = c.communicate(timeout=deadline_s + 60)
            outs.append(json.loads(out.strip().splitlines()[-1]))
        live_s = time.monotonic() - t0
        kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        client_cpu = kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime
        cpu = {name: (proc_cpu(p) or 0.0) - cpu0[name] for name, p in procs.items()}
        svc = {name: sum(tree_cpus(pid).values()) - svc0[name] for name, pid in services.items()}
        redis1 = redis_stats(args.redis_url)
    lat = sorted(x for o in outs for x in o["lat"])
    first = sorted(x for o in outs for x in o["settling"])
    api_cpu = sum(v for k, v in cpu.items() if k.startswith("api"))
    delivered = sum(o["ticks"] for o in outs)
    streams = args.apis * args.streams
    per_api_delivered = delivered / args.apis
    return {
        "streams": streams,
        "settle": args.settle,
        "runs": args.runs,
        "apis": args.apis,
        "ticks_published": args.runs * args.ticks,
        "ticks_expected": streams * args.ticks,
        "ticks_delivered": delivered,
        "live_s": round(live_s, 1),
        "delivered_per_s": round(delivered / (args.ticks * args.interval_ms / 1000)),
        "open_s": round(open_s, 1),
        "lat_p50_ms": round(1000 * (pct(lat, 50) or 0), 1),
        "lat_p99_ms": round(1000 * (pct(lat, 99) or 0), 1),
        "lat_max_ms": round(1000 * (lat[-1] if lat else 0), 1),
        "first_ticks_p50_ms": round(1000 * (pct(first, 50) or 0), 1),
        "first_ticks_p99_ms": round(1000 * (pct(first, 99) or 0), 1),
        "gaps": sum(o["gaps"] for o in outs),
        "missing_end": sum(o["missing_end"] for o in outs),
        "errors": sum(o["errors"] for o in outs),
        "api_cpu_s": {k: round(v, 2) for k, v in cpu.items() if k.startswith("api")},
        "api_us_per_delivered": round(1e6 * api_cpu / max(delivered, 1), 1),
        "worker_cpu_s": round(cpu["worker1"], 2),
        "redis_cpu_s": round(svc.get("redis", 0.0), 2),
        "client_cpu_s": round(client_cpu, 2),
        "redis_publishes": int(sum(redis1.values()) - sum(redis0.values())),
        "api_rss_mib": {k: round(v / 2**20) for k, v in held.items()},
        "api_kib_per_stream": round(sum(held[k] - baseline[k] for k in held) / 1024 / streams, 1),
        "per_api_delivered_per_s": round(per_api_delivered / (args.ticks * args.interval_ms / 1000)),
    }


def report(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"{r['streams']:,} streams ({r['apis']} API processes x {r['streams'] // r['apis']:,}) of {r['runs']} runs;"
            f" all open in {r['open_s']} s",
            f"ticks: {r['ticks_published']:,} published"
            f" ({r['redis_publishes']:,} PUBLISH calls on the Redis server meanwhile, any client's),"
            f" {r['ticks_delivered']:,} of {r['ticks_expected']:,} delivered ({r['delivered_per_s']:,}/s;"
            f" {r['per_api_delivered_per_s']:,}/s per API process)",
            f"latency from tick {r['settle']}: p50 {r['lat_p50_ms']} ms, p99 {r['lat_p99_ms']} ms,"
            f" max {r['lat_max_ms']} ms (before: p50 {r['first_ticks_p50_ms']}, p99 {r['first_ticks_p99_ms']} ms);"
            f" gaps {r['gaps']}, missing ends {r['missing_end']}, errors {r['errors']}",
            f"API CPU {r['api_cpu_s']} s over {r['live_s']} s: {r['api_us_per_delivered']} us per delivered event;"
            f" worker {r['worker_cpu_s']} s, Redis {r['redis_cpu_s']} s, clients {r['client_cpu_s']} s (whole life)",
            f"API RSS with every stream open {r['api_rss_mib']} MiB: {r['api_kib_per_stream']} KiB per stream",
        ]
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--apis", type=int, default=2, help="API processes")
    ap.add_argument("--streams", type=int, default=2000, help="streams held by each API process")
    ap.add_argument("--runs", type=int, default=10, help="runs the streams follow")
    ap.add_argument("--ticks", type=int, default=20, help="ticks per run")
    ap.add_argument("--interval-ms", type=int, default=1000, help="between a run's ticks")
    ap.add_argument("--settle", type=int, default=2, help="latency quoted from the run's tick i = N on")
    ap.add_argument("--sample", type=int, default=5, help="JSON-decode 1 tick in N per stream for latency")
    ap.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE", help="for every process")
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres", help="maintenance database")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--api", help=argparse.SUPPRESS)
    ap.add_argument("--run-ids", help=argparse.SUPPRESS)
    ap.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)  # this client's first run
    ap.add_argument("--deadline-s", type=float, default=120, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile()
    if args.client:
        print(json.dumps(asyncio.run(client(args))), flush=True)
        return 0
    result = simulate(args)
    print(report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "result": result}, f, indent=1)
    bad = result["gaps"] + result["missing_end"] + result["errors"]
    return 1 if bad or result["ticks_delivered"] < result["ticks_expected"] else 0


if __name__ == "__main__":
    sys.exit(main())
