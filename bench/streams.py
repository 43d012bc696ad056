"""Streaming benchmark: runyard against the ceiling server, on this machine.

For each scenario it starts a fresh server process (the ceiling first, then
runyard), waits for ``/healthz``, runs the load from separate client
process(es) (``_loadgen.py``), samples the server's process-tree RSS and CPU
with psutil meanwhile, stops the server and prints the figures; at the end a
markdown table compares the two against the project's targets.

    .venv/bin/python bench/streams.py --quick                 # smoke test, both targets
    .venv/bin/python bench/streams.py                         # full size, both targets
    .venv/bin/python bench/streams.py --target ceiling --scenarios burst,replay --json out.json

Scenarios (sizes are options; ``--quick`` shrinks them about 10x):

- ``burst``:  R runs x N events, interval 0, R concurrent owners each create a
  ticker run and stream it to its end. Targets (issue 15): runyard >= 1.0x the
  ceiling's events/s, with a p99 latency at most 3x the ceiling's.
- ``steady``: S concurrent streams, one tick every 100 ms for 30 s. Targets (issue 15):
  latency p50 <= 5 ms and p99 <= 50 ms, first event p50 at most 2x the ceiling's, server
  CPU per event at most 1.3x the ceiling's. The latency once every stream is live (the
  ramp of creations left out) is printed beside it.
- ``idle``:   I subscribers on runs that stay silent, held open ~10 s (runyard with a 2 s
  heartbeat, so every stream must see pings), then the runs are cancelled.
  Target: server RSS <= 1 GiB.
- ``replay``: one finished 100,000-event run streamed again from the start.
  Target: >= 100,000 events/s.

See bench/README.md for what each number means. Only 127.0.0.1 is ever used.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import queue
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from _util import (  # noqa: E402
    HOST,
    RssSampler,
    ServerProcess,
    cpu_between,
    free_port,
    median,
    output_path,
    pct,
    raise_nofile,
    tree_cpu,
)
from cpu_profile import Profiler, report  # noqa: E402

SCENARIOS = ("burst", "steady", "idle", "replay")
TARGETS = ("ceiling", "runyard")
MIB = 1 << 20

# option: (full size, --quick size)
SIZES: dict[str, tuple[Any, Any]] = {
    "burst_runs": (100, 20),
    "burst_count": (1000, 500),
    "burst_repeats": (3, 1),
    "steady_streams": (1000, 100),
    "steady_count": (300, 50),
    "idle_streams": (10_000, 1000),
    "idle_hold_s": (10.0, 4.0),
    "replay_count": (100_000, 10_000),
}

BURST_NOTE = (
    "note: client and server share this machine's {cores} cores. The burst client is one process "
    "kept as cheap as possible (uvloop, bytes-level SSE parsing, seq of every frame from its id: "
    "line, marker checked with a bytes `in`, JSON-decoding 1 tick in {sample}), but it still "
    "competes with the server for CPU; its CPU time is printed next to the server's."
)


# --------------------------------------------------------------------------- servers


def server_spec(
    target: str, args: argparse.Namespace, port: int, tmpdir: str, scenario_env: dict[str, str]
) -> tuple[list[str], dict[str, str], str]:
    """(argv, env, cwd) that start ``target`` on ``port``."""
    env = dict(os.environ)
    env.pop("PYTHONSTARTUP", None)
    if target == "ceiling":
        shared = os.path.abspath(args.shared)
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "ceiling_server:app",
            "--host",
            HOST,
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
        ]
        return cmd, env, shared
    src = os.path.join(REPO, "src")
    if os.path.isdir(os.path.join(src, "runyard")):  # run the working tree even if not installed
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["RUNYARD_STORE"] = f"sqlite:///{tmpdir}/bench.db"
    env["RUNYARD_HOST"] = HOST
    env["RUNYARD_PORT"] = str(port)
    env.update(scenario_env)
    for kv in args.server_env:  # the user's word wins
        k, _, v = kv.partition("=")
        env[k] = v
    if args.runyard_cmd:
        cmd = shlex.split(args.runyard_cmd.format(port=port, python=sys.executable, host=HOST))
    else:
        cmd = [sys.executable, "-m", "runyard.cli", "demo", "--host", HOST, "--port", str(port)]
    return cmd, env, tmpdir


def scenario_server_env(scenario: str, args: argparse.Namespace) -> dict[str, str]:
    """runyard settings a scenario needs (overridable with --server-env)."""
    concurrent = {"burst": args.burst_runs, "steady": args.steady_streams, "idle": args.idle_streams, "replay": 1}[
        scenario
    ]
    env = {
        # every run of the scenario must execute at once (the default is 64 per process)
        "RUNYARD_MAX_CONCURRENT_RUNS": str(max(64, concurrent)),
        # like the ceiling's --no-access-log: no per-request/per-run log lines in the hot path
        "RUNYARD_LOG_LEVEL": "WARNING",
    }
    if scenario == "idle":
        env["RUNYARD_SSE_HEARTBEAT_S"] = str(args.idle_heartbeat_s)
    return env


# --------------------------------------------------------------------------- clients


class ClientProc:
    """One load-client process; its stdout JSON lines are collected by a thread."""

    def __init__(self, cfg: dict[str, Any], log_path: str, interactive: bool) -> None:
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "_loadgen.py"), json.dumps(cfg)],
            stdin=subprocess.PIPE if interactive else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.log,
            cwd=HERE,
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.bad_output: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            for raw in self.proc.stdout:
                try:
                    self.lines.put(json.loads(raw))
                except ValueError as e:
                    self.bad_output.append(f"unparsable line ({len(raw)} bytes, {e}): {raw[:200]!r}")
        except Exception as e:  # never die silently: the driver would wait for nothing
            self.bad_output.append(f"reading the client's output failed: {type(e).__name__}: {e}")
        finally:
            self.lines.put(None)

    def next_line(self, want: str, deadline: float) -> dict[str, Any] | None:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                msg = self.lines.get(timeout=left)
            except queue.Empty:
                return None
            if msg is None:
                return None
            if msg.get("event") == want:
                return msg

    def go(self) -> None:
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.write(b"GO\n")
                self.proc.stdin.close()
            except OSError:
                pass

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # only on timeout: the client ends by itself otherwise
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.log.close()

    def stderr_tail(self) -> str:
        try:
            with open(self.log.name, "rb") as f:
                return f.read()[-2000:].decode("utf-8", "replace")
        except OSError:
            return ""


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Adds up shard results: counters summed, samples concatenated, span widened."""
    out: dict[str, Any] = {}
    for r in results:
        for k, v in r.items():
            if k in ("t_start",):
                out[k] = min(out.get(k, v), v)
            elif k in ("t_end", "open_s", "hold_s", "client_maxrss_kib"):
                out[k] = max(out.get(k, v), v)
            elif isinstance(v, (bool, str)) or v is None:
                out.setdefault(k, v)
            elif isinstance(v, (int, float)):
                out[k] = out.get(k, 0) + v
            elif isinstance(v, list):
                out[k] = out.get(k, []) + v
            else:
                out.setdefault(k, v)
    return out


def run_clients(
    cfgs: list[dict[str, Any]], tmpdir: str, timeout_s: float, on_opened: Any = None
) -> tuple[dict[str, Any] | None, list[str]]:
    """Runs one client process per config; returns (merged result, problems)."""
    interactive = on_opened is not None
    procs = [ClientProc(c, os.path.join(tmpdir, f"client{i}.log"), interactive) for i, c in enumerate(cfgs)]
    problems: list[str] = []
    deadline = time.monotonic() + timeout_s
    try:
        if interactive:
            opened = [p.next_line("opened", deadline) for p in procs]
            if any(o is None for o in opened):
                problems.append("a client never reported its streams open")
            on_opened([o for o in opened if o])
            for p in procs:
                p.go()
        results = []
        for i, p in enumerate(procs):
            r = p.next_line("result", deadline)
            if r is None:
                problems.append(
                    f"client {i} gave no result (exit {p.proc.poll()}): {p.bad_output[:3]} {p.stderr_tail()[-500:]}"
                )
            else:
                results.append(r)
    finally:
        for p in procs:
            p.close()
    return (merge(results) if results else None), problems


def shards(n: int, k: int) -> list[list[int]]:
    k = max(1, min(k, n)) if n else 1
    return [[i, n, k] for i in range(k)]


# --------------------------------------------------------------------------- one scenario on one target


def run_one(target: str, scenario: str, args: argparse.Namespace) -> dict[str, Any]:
    tmpdir = tempfile.mkdtemp(prefix=f"runyard-bench-{target}-{scenario}-")
    port = free_port()
    cmd, env, cwd = server_spec(target, args, port, tmpdir, scenario_server_env(scenario, args))
    url = f"http://{HOST}:{port}"
    server = ServerProcess(cmd, env, cwd, os.path.join(tmpdir, "server.log"))
    res: dict[str, Any] = {"target": target, "scenario": scenario, "error": None}
    sampler: RssSampler | None = None
    failed = False
    try:
        server.start()
        server.wait_healthy(port, args.startup_timeout)
        sampler = RssSampler(server.pid, 0.1)
        res["rss_base_mib"] = round(sampler.sample() / MIB, 1)
        sampler.start()
        profiling: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
        if args.profile:
            os.makedirs(args.profile, exist_ok=True)
            res["profile"] = os.path.join(args.profile, f"{target}-{scenario}.txt")
            profiling = Profiler(server.pid, res["profile"], rate=args.profile_rate)
        cpu0 = tree_cpu(server.pid)
        t0 = time.time()
        with profiling:
            client, problems = LOADS[scenario](target, url, args, tmpdir, res, sampler)
            res["server_cpu_s"] = round(tree_cpu(server.pid) - cpu0, 2)
        res["elapsed_s"] = round(time.time() - t0, 2)
        res["rss_peak_mib"] = round(sampler.stop() / MIB, 1)
        if not server.alive():
            problems.append(f"server died during the scenario; log tail:\n{server.log_tail()}")
        if client is None:
            problems.append("no client result")
        else:
            summarize(scenario, client, res, sampler.cpu_trace)
        if problems:
            res["error"] = "; ".join(problems)
    except Exception as e:  # a target that cannot start or crashes is reported, not fatal
        res["error"] = f"{type(e).__name__}: {e}"
        failed = True
    finally:
        if sampler is not None:
            sampler.stop()
        server.stop()
        if res.get("error"):
            failed = True
        if failed and args.keep_failed:
            res["tmpdir"] = tmpdir
        else:
            shutil.rmtree(tmpdir, ignore_errors=True)
    return res


def base_cfg(url: str, args: argparse.Namespace) -> dict[str, Any]:
    return {"url": url, "create_concurrency": args.create_concurrency, "payload_bytes": args.payload_bytes}


def load_burst(
    target: str, url: str, args: argparse.Namespace, tmpdir: str, res: dict[str, Any], sampler: RssSampler
) -> tuple[dict[str, Any] | None, list[str]]:
    deadline = args.timeout or 300.0
    cfgs = [
        {
            **base_cfg(url, args),
            "mode": "streams",
            "indices": ix,
            "count": args.burst_count,
            "interval_ms": 0,
            "sample": args.sample,
            "deadline_s": deadline,
        }
        for ix in shards(args.burst_runs, args.clients)
    ]
    res["expected_ticks"] = args.burst_runs * args.burst_count
    return run_clients(cfgs, tmpdir, deadline + 60)


def load_steady(
    target: str, url: str, args: argparse.Namespace, tmpdir: str, res: dict[str, Any], sampler: RssSampler
) -> tuple[dict[str, Any] | None, list[str]]:
    deadline = args.timeout or (args.steady_count * args.steady_interval_ms / 1000 + 180)
    cfgs = [
        {
            **base_cfg(url, args),
            "mode": "streams",
            "indices": ix,
            "count": args.steady_count,
            "interval_ms": args.steady_interval_ms,
            "sample": args.steady_sample,
            "deadline_s": deadline,
            "lat_times": True,  # when each sample came: the settled latency, after the ramp
        }
        for ix in shards(args.steady_streams, args.clients)
    ]
    res["expected_ticks"] = args.steady_streams * args.steady_count
    return run_clients(cfgs, tmpdir, deadline + 60)


def load_idle(
    target: str, url: str, args: argparse.Namespace, tmpdir: str, res: dict[str, Any], sampler: RssSampler
) -> tuple[dict[str, Any] | None, list[str]]:
    after = args.idle_after if args.idle_after != "auto" else ("close" if target == "ceiling" else "cancel")
    open_timeout = max(60.0, args.idle_streams / 50)
    end_timeout = max(30.0, args.idle_streams / 100)
    go_timeout = args.idle_hold_s + 120
    deadline = args.timeout or (open_timeout + go_timeout + end_timeout + 120)
    cfgs = [
        {
            **base_cfg(url, args),
            "mode": "idle",
            "indices": ix,
            "count": args.idle_count,
            "interval_ms": args.idle_interval_ms,
            "sample": 1,
            "after": after,
            "open_timeout_s": open_timeout,
            "go_timeout_s": go_timeout,
            "end_timeout_s": end_timeout,
            "deadline_s": deadline,
        }
        for ix in shards(args.idle_streams, args.idle_clients)
    ]

    def hold(opened: list[dict[str, Any]]) -> None:
        res["rss_open_mib"] = round(sampler.sample() / MIB, 1)
        log(
            f"    {sum(o['n_open'] for o in opened)}/{args.idle_streams} streams open after "
            f"{max((o['open_s'] for o in opened), default=0):.1f}s; holding {args.idle_hold_s:g}s"
        )
        time.sleep(args.idle_hold_s)
        res["rss_hold_mib"] = round(sampler.sample() / MIB, 1)

    res["after"] = after
    res["heartbeat_expected"] = target != "ceiling"  # the ceiling sends no heartbeats
    return run_clients(cfgs, tmpdir, deadline + 60, on_opened=hold)


def load_replay(
    target: str, url: str, args: argparse.Namespace, tmpdir: str, res: dict[str, Any], sampler: RssSampler
) -> tuple[dict[str, Any] | None, list[str]]:
    deadline = args.timeout or max(300.0, args.replay_count / 500)
    cfg = {
        **base_cfg(url, args),
        "mode": "replay",
        "indices": [0, 1, 1],
        "count": args.replay_count,
        "repeats": args.replay_repeats,
        "finish": "stream" if target == "ceiling" else "poll",
        "finish_timeout_s": deadline * 0.8,
        "sample": 0,
        "deadline_s": deadline,
    }
    return run_clients([cfg], tmpdir, deadline + 60)


LOADS = {"burst": load_burst, "steady": load_steady, "idle": load_idle, "replay": load_replay}


def settled(c: dict[str, Any], res: dict[str, Any], cpu_trace: list[tuple[float, float]] | None = None) -> None:
    """Latency once every stream is live (its first tick received): the ramp-up before,
    while runs are created and streams opened, is queueing behind creations, and the
    ticks a stream reads from history when it opens late count as late. Both are in
    the p99 over all ticks; this one says what a user sees once the load is steady.
    With the server's ``cpu_trace``, its CPU per event over the same stretch: the
    steady state's, the ramp's creations and openings left out."""
    lat, at, live = c.get("lat_ms", []), c.get("lat_at", []), c.get("live_at", [])
    if not live or len(lat) != len(at):
        return
    live_at = max(live)
    after = [x for x, t in zip(lat, at, strict=True) if t >= live_at]
    res.update(
        ramp_s=round(live_at - c["t_start"], 2),
        settled_samples=len(after),
        settled_p50_ms=r2(pct(after, 50)),
        settled_p99_ms=r2(pct(after, 99)),
        settled_max_ms=r2(max(after, default=None)),
    )
    cpu = cpu_between(cpu_trace or [], live_at, c["t_end"])
    if cpu is not None and after and c.get("ticks"):
        events = c["ticks"] * len(after) / len(lat)  # the ticks of the stretch, however many were sampled
        res["settled_cpu_us_per_event"] = r2(cpu * 1e6 / events, 1)


def ramp_split(c: dict[str, Any], res: dict[str, Any]) -> None:
    """Where the late ticks come from: those emitted before their stream's response
    came (read from the run's history when it opened) against those emitted while it
    was open (delivered live); and, per stream, what its first event waited for: its
    creation, then its stream's opening, then the first tick on the open stream."""
    lat, pre, ramp = c.get("lat_ms", []), c.get("lat_pre", []), c.get("ramp", [])
    if not pre or len(pre) != len(lat):
        return
    live = [x for x, p in zip(lat, pre, strict=True) if not p]
    history = [x for x, p in zip(lat, pre, strict=True) if p]
    res.update(
        live_p99_ms=r2(pct(live, 99)),
        history_samples=len(history),
        history_p99_ms=r2(pct(history, 99)),
    )
    created = [(b - a) * 1000 for a, b, *_ in ramp if b]
    opened = [(o - b) * 1000 for _, b, o, *_ in ramp if o and b]
    first_tick = [(f - o) * 1000 for _, _, o, f, *_ in ramp if f and o]
    # the first tick's emission (its ``t``), from its run's creation: the queue and the start
    emitted = [(e - b) * 1000 for _, b, _, _, e in ramp if e and b]
    delivered = [(f - e) * 1000 for _, _, _, f, e in ramp if f and e]
    res.update(
        ramp_create_p50_ms=r2(pct(created, 50)),
        ramp_create_p99_ms=r2(pct(created, 99)),
        ramp_open_p50_ms=r2(pct(opened, 50)),
        ramp_open_p99_ms=r2(pct(opened, 99)),
        ramp_first_tick_p50_ms=r2(pct(first_tick, 50)),
        ramp_first_tick_p99_ms=r2(pct(first_tick, 99)),
        ramp_first_emit_p50_ms=r2(pct(emitted, 50)),
        ramp_first_delivery_p50_ms=r2(pct(delivered, 50)),
    )


def r2(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(x, nd)


def summarize(
    scenario: str, c: dict[str, Any], res: dict[str, Any], cpu_trace: list[tuple[float, float]] | None = None
) -> None:
    """Turns a merged client result into the scenario's figures (into ``res``);
    ``cpu_trace``: the server's CPU as sampled during the load (``RssSampler``)."""
    lat, ttfe = c.get("lat_ms", []), c.get("ttfe_ms", [])
    violations = {
        k: c.get(k, 0) for k in ("gaps", "dups", "leaks", "missing_end", "short", "bad_end_status", "bad_frames")
    }
    res.update(
        client_cpu_s=c.get("client_cpu_s"),
        client_maxrss_mib=round(c.get("client_maxrss_kib", 0) / 1024, 1),
        streams=c.get("streams"),
        ticks=c.get("ticks"),
        frames=c.get("frames"),
        n_errors=c.get("n_errors", 0),
        retries=c.get("retries", 0),
        errors=c.get("errors", [])[:5],
        ttfe_p50_ms=r2(pct(ttfe, 50), 1),
        ttfe_p99_ms=r2(pct(ttfe, 99), 1),
        lat_samples=len(lat),
    )
    if scenario in ("burst", "steady"):
        wall = c["t_end"] - c["t_start"]
        res.update(
            wall_s=round(wall, 3),
            events_per_s=round(c["ticks"] / wall) if wall > 0 else None,
            lat_p50_ms=r2(pct(lat, 50)),
            lat_p99_ms=r2(pct(lat, 99)),
            lat_max_ms=r2(max(lat, default=None)),
            # what issue 15's CPU target compares: the server's CPU per event it delivered
            # (scaleout.py accounts its processes' CPU by group instead: no server_cpu_s)
            cpu_us_per_event=(
                r2(res["server_cpu_s"] * 1e6 / c["ticks"], 1) if c.get("ticks") and "server_cpu_s" in res else None
            ),
        )
        if scenario == "steady":
            settled(c, res, cpu_trace)
            ramp_split(c, res)
    elif scenario == "idle":
        n = res["streams"] or 0
        violations["not_open"] = n - c.get("held_open", 0)
        if res.get("heartbeat_expected"):
            violations["no_heartbeat"] = c.get("held_open", 0) - c.get("heartbeating", 0)
        res.update(
            n_open=c.get("n_open"),
            held_open=c.get("held_open"),
            heartbeating=c.get("heartbeating"),
            pings_in_hold=c.get("pings_in_hold"),
            open_s=c.get("open_s"),
            hold_s=c.get("hold_s"),
            ended=c.get("ended"),
        )
    elif scenario == "replay":
        reps = c.get("replays", [])
        eps = [r["events_per_s"] for r in reps if r.get("events_per_s")]
        tt = [r["ttfe_ms"] for r in reps if r.get("ttfe_ms") is not None]
        res.update(
            replays=reps,
            live_s=c.get("live_s"),
            events_per_s=median(eps),
            events_per_s_best=max(eps, default=None),
            ttfe_p50_ms=median(tt),
            ttfe_p99_ms=None,
            replay_s=median([r["seconds"] for r in reps]),
        )
        if c.get("finished_status") is not None:
            res["finished_status"] = c["finished_status"]
    violations["errors"] = res["n_errors"]
    res["violations"] = violations
    res["violations_total"] = sum(violations.values())


# what the JSON keeps of each repeat
REPEAT_FIGURES = (
    "events_per_s",
    "lat_p50_ms",
    "lat_p99_ms",
    "settled_p50_ms",
    "settled_p99_ms",
    "ttfe_p50_ms",
    "rss_peak_mib",
    "server_cpu_s",
    "cpu_us_per_event",
    "settled_cpu_us_per_event",
    "client_cpu_s",
    "violations_total",
    "error",
)


def pick_median(reps: list[dict[str, Any]]) -> dict[str, Any]:
    """Of repeated runs, the one with the median events/s; violations and peak RSS over all of them."""
    if len(reps) == 1:
        return reps[0]
    good = [r for r in reps if r.get("events_per_s") is not None]
    if not good:
        return reps[0]
    good.sort(key=lambda r: r["events_per_s"])
    res = over_all_repeats(dict(good[(len(good) - 1) // 2]), reps)  # the lower median: never flatters
    if len(good) < len(reps):  # a repeat that failed outright counts against the scenario
        res["violations_total"] += len(reps) - len(good)
        res["violations"]["failed_repeats"] = len(reps) - len(good)
    return res


def alternated(scenario: str, args: argparse.Namespace) -> dict[tuple[str, str], dict[str, Any]]:
    """The scenario's runs (``--burst-repeats``, ``--steady-repeats``; 1 for the
    others), the targets taking turns (ceiling, runyard, ceiling, ...), so that
    the machine's slow and fast minutes fall on both alike. Burst reports the
    run with the median events/s; steady, each figure's median."""
    n = {"burst": args.burst_repeats, "steady": args.steady_repeats}.get(scenario, 1)
    reps: dict[str, list[dict[str, Any]]] = {target: [] for target in args.targets}
    for k in range(n):
        for target in args.targets:
            log(f"  {target:8s} running{f' ({k + 1}/{n})' if n > 1 else ''}...")
            reps[target].append(run_one(target, scenario, args))
            print_one(reps[target][-1])
    results = {}
    for target, runs in reps.items():
        if scenario == "steady":
            results[(scenario, target)] = median_per_figure(runs)
            if n > 1:
                log(f"  {target:8s} medians of {n}: every figure in the table is its own median")
        else:
            results[(scenario, target)] = res = pick_median(runs)
            if n > 1:
                log(f"  {target:8s} median of {n}: {fmt(res.get('events_per_s'))} ev/s")
    return results


def median_per_figure(reps: list[dict[str, Any]]) -> dict[str, Any]:
    """Of repeated runs, each numeric figure's median (so the figures of one line
    may come from different runs); violations summed, peak RSS the highest."""
    if len(reps) == 1:
        return reps[0]
    res = dict(reps[0])
    for key in reps[0]:
        values = [r.get(key) for r in reps]
        numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(numbers) == len(values):
            res[key] = median(numbers)
    return over_all_repeats(res, reps)


def over_all_repeats(res: dict[str, Any], reps: list[dict[str, Any]]) -> dict[str, Any]:
    """``res`` with what counts over every repeat: each one's main figures, the
    highest peak RSS, the violations and errors of all of them."""
    res["repeats"] = [{k: r.get(k) for k in REPEAT_FIGURES} for r in reps]
    res["rss_peak_mib"] = max((r.get("rss_peak_mib") or 0) for r in reps)
    res["violations"] = {k: sum(r.get("violations", {}).get(k, 0) for r in reps) for k in res.get("violations", {})}
    res["violations_total"] = sum((r.get("violations_total") or 0) for r in reps)
    res["error"] = "; ".join(r["error"] for r in reps if r.get("error")) or None
    return res


# --------------------------------------------------------------------------- reporting


def log(msg: str) -> None:
    print(msg, flush=True)


def print_one(res: dict[str, Any]) -> None:
    t, s = res["target"], res["scenario"]
    if res.get("streams") is None:
        log(f"  {t:8s} FAILED: {res.get('error')}")
        return
    parts = []
    if res.get("events_per_s") is not None:
        parts.append(f"{res['events_per_s']:,} ev/s")
    if s in ("burst", "steady"):
        parts.append(f"lat p50 {res['lat_p50_ms']} / p99 {res['lat_p99_ms']} ms")
    if s == "idle":
        parts.append(
            f"open {res['held_open']}/{res['streams']}, heartbeating {res['heartbeating']}, "
            f"rss open {res.get('rss_open_mib')} / end of hold {res.get('rss_hold_mib')} MiB"
        )
    if s == "replay":
        reps = ", ".join(f"{r['events_per_s']:,}" for r in res["replays"] if r.get("events_per_s"))
        parts.append(f"replays [{reps}] ev/s, live pass {res.get('live_s')} s")
    parts.append(
        f"first event p50 {res['ttfe_p50_ms']} ms"
        + (f" / p99 {res['ttfe_p99_ms']} ms" if res.get("ttfe_p99_ms") is not None else "")
    )
    if res.get("ramp_create_p50_ms") is not None:
        parts.append(
            f"of which creation p50 {res['ramp_create_p50_ms']} ms, stream open {res['ramp_open_p50_ms']} ms,"
            f" first tick on the open stream {res['ramp_first_tick_p50_ms']} ms"
            f" (emitted {res['ramp_first_emit_p50_ms']} ms after the creation's answer,"
            f" delivered {res['ramp_first_delivery_p50_ms']} ms after its emission)"
        )
    parts.append(f"server rss {res['rss_base_mib']} -> peak {res['rss_peak_mib']} MiB")
    parts.append(
        f"cpu server {res['server_cpu_s']} s / client {res['client_cpu_s']} s "
        f"(client rss {res.get('client_maxrss_mib')} MiB)"
    )
    if res.get("cpu_us_per_event") is not None:
        parts.append(f"{res['cpu_us_per_event']} µs server CPU per event")
    if res.get("settled_cpu_us_per_event") is not None:
        parts.append(f"{res['settled_cpu_us_per_event']} once all are live")
    bad = {k: v for k, v in res["violations"].items() if v}
    parts.append(f"violations {res['violations_total']}" + (f" {bad}" if bad else ""))
    if res.get("retries"):
        parts.append(f"{res['retries']} requests retried after a connection reset")
    log(f"  {t:8s} " + "; ".join(parts))
    if res.get("error"):
        log(f"  {t:8s} problems: {res['error']}")
    if res.get("errors"):
        log(f"  {t:8s} first errors: {res['errors']}")
    if res.get("profile"):
        log(f"  {t:8s} where the server's CPU went ({res['profile']}):")
        log(report(res["profile"], res.get("ticks"), res.get("server_cpu_s")))


# (scenario, label, key, target text, check) - check(ceiling, runyard) -> bool or None
def _abs(pred: Any) -> Any:
    def check(c: Any, r: Any) -> Any:
        v = r if r is not None else c
        return None if v is None else pred(v)

    return check


def _within(factor: float) -> Any:
    """At most ``factor`` times the ceiling's figure (no verdict without both)."""

    def check(c: Any, r: Any) -> Any:
        return None if not isinstance(c, (int, float)) or not isinstance(r, (int, float)) else r <= factor * c

    return check


def _zero_all(c: Any, r: Any) -> Any:
    vals = [v for v in (c, r) if v is not None]
    return None if not vals else all(v == 0 for v in vals)


ROWS: list[tuple[str, str, str, str, Any]] = [
    (
        "burst",
        "delivered events/s",
        "events_per_s",
        ">= 1.0x (issue 15)",
        lambda c, r: None if c is None or r is None else r >= 1.0 * c,
    ),
    ("burst", "latency p50 (ms)", "lat_p50_ms", "", None),
    ("burst", "latency p99 (ms)", "lat_p99_ms", "<= 3x (issue 15)", _within(3.0)),
    ("burst", "first event p50 (ms)", "ttfe_p50_ms", "", None),
    ("burst", "first event p99 (ms)", "ttfe_p99_ms", "", None),
    ("burst", "server peak RSS (MiB)", "rss_peak_mib", "", None),
    ("burst", "server / client CPU (s)", "cpu", "", None),
    ("burst", "server CPU per delivered event (µs)", "cpu_us_per_event", "", None),
    ("burst", "violations", "violations_total", "0", _zero_all),
    ("steady", "delivered events/s", "events_per_s", "", None),
    ("steady", "latency p50 (ms)", "lat_p50_ms", "<= 5 ms (issue 15)", _abs(lambda v: v <= 5)),
    ("steady", "latency p99 (ms)", "lat_p99_ms", "<= 50 ms (issue 15)", _abs(lambda v: v <= 50)),
    ("steady", "all streams live after (s)", "ramp_s", "", None),
    ("steady", "latency once all are live, p50 (ms)", "settled_p50_ms", "", None),
    ("steady", "latency once all are live, p99 (ms)", "settled_p99_ms", "", None),
    ("steady", "first event p50 (ms)", "ttfe_p50_ms", "<= 2x (issue 15)", _within(2.0)),
    ("steady", "first event p99 (ms)", "ttfe_p99_ms", "", None),
    ("steady", "first event: its creation p50 (ms)", "ramp_create_p50_ms", "", None),
    ("steady", "first event: then its stream's opening p50 (ms)", "ramp_open_p50_ms", "", None),
    ("steady", "first event: then its first tick p50 (ms)", "ramp_first_tick_p50_ms", "", None),
    ("steady", "first tick emitted, after the creation's answer, p50 (ms)", "ramp_first_emit_p50_ms", "", None),
    ("steady", "first tick delivered, after its emission, p50 (ms)", "ramp_first_delivery_p50_ms", "", None),
    ("steady", "server peak RSS (MiB)", "rss_peak_mib", "", None),
    ("steady", "server / client CPU (s)", "cpu", "", None),
    ("steady", "server CPU per delivered event (µs)", "cpu_us_per_event", "<= 1.3x", _within(1.3)),
    ("steady", "the same, once all streams are live (µs)", "settled_cpu_us_per_event", "", None),
    ("steady", "violations", "violations_total", "0", _zero_all),
    ("idle", "streams held open", "held_open", "all", None),
    ("idle", "streams with heartbeats", "heartbeating", "all (runyard)", None),
    ("idle", "server RSS, streams open (MiB)", "rss_hold_mib", "", None),
    ("idle", "server peak RSS (MiB)", "rss_peak_mib", "<= 1024 MiB", _abs(lambda v: v <= 1024)),
    ("idle", "first event p50 (ms)", "ttfe_p50_ms", "", None),
    ("idle", "first event p99 (ms)", "ttfe_p99_ms", "", None),
    ("idle", "violations", "violations_total", "0", _zero_all),
    ("replay", "replay events/s (median)", "events_per_s", ">= 100,000", _abs(lambda v: v >= 100_000)),
    ("replay", "replay first event (ms)", "ttfe_p50_ms", "", None),
    ("replay", "server peak RSS (MiB)", "rss_peak_mib", "", None),
    ("replay", "violations", "violations_total", "0", _zero_all),
]


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:.1f}"
        return f"{v:.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(results: dict[tuple[str, str], dict[str, Any]], args: argparse.Namespace) -> tuple[str, list[Any]]:
    lines = [
        "| scenario | metric | ceiling | runyard | ratio | target | ok |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    rows = []
    for scen, label, key, target_text, check in ROWS:
        if scen not in args.scenarios:
            continue
        vals: dict[str, Any] = {}
        for t in TARGETS:
            r = results.get((scen, t))
            if r is None:
                vals[t] = None
            elif r.get("streams") is None:
                vals[t] = "FAILED"
            elif key == "cpu":
                vals[t] = f"{fmt(r.get('server_cpu_s'))} / {fmt(r.get('client_cpu_s'))}"
            else:
                vals[t] = r.get(key)
            if key == "held_open" and r is not None and r.get("streams") is not None:
                vals[t] = f"{fmt(r.get('held_open'))} / {fmt(r.get('streams'))}"
            if key == "heartbeating" and r is not None and r.get("streams") is not None:
                vals[t] = (
                    f"{fmt(r.get('heartbeating'))} / {fmt(r.get('held_open'))}"
                    if r.get("heartbeat_expected")
                    else "n/a"
                )
        c, ry = vals["ceiling"], vals["runyard"]
        ratio = f"{ry / c:.2f}x" if isinstance(c, (int, float)) and isinstance(ry, (int, float)) and c else ""
        ok_txt = ""
        if any(v == "FAILED" for v in (c, ry)):
            ok = False if (check or target_text) else None
        elif key == "held_open":
            oks = [
                r["held_open"] == r["streams"]
                for t in TARGETS
                if (r := results.get((scen, t))) and r.get("streams") is not None
            ]
            ok = all(oks) if oks else None
        elif key == "heartbeating":
            r = results.get((scen, "runyard"))
            ok = (
                r["heartbeating"] == r["held_open"] == r["streams"]
                if r and r.get("streams") is not None and r.get("heartbeat_expected")
                else None
            )
        else:
            ok = check(c, ry) if check else None
        if ok is not None:
            ok_txt = "yes" if ok else "**NO**"
            if check is not None and key not in ("violations_total",) and ry is None and c is not None:
                ok_txt += " (ceiling)"
        lines.append(f"| {scen} | {label} | {fmt(c)} | {fmt(ry)} | {ratio} | {target_text} | {ok_txt} |")
        rows.append(
            {
                "scenario": scen,
                "metric": label,
                "ceiling": c,
                "runyard": ry,
                "ratio": ratio,
                "target": target_text,
                "ok": ok,
            }
        )
    return "\n".join(lines), rows


# --------------------------------------------------------------------------- main


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=_Help)
    ap.add_argument(
        "--target",
        choices=("both", *TARGETS),
        default="both",
        help="server(s) to measure; 'both' runs the ceiling then runyard for each scenario",
    )
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset of " + ",".join(SCENARIOS))
    ap.add_argument("--quick", action="store_true", help="shrink every size ~10x (smoke test)")
    g = ap.add_argument_group("sizes (defaults: full size; --quick value in brackets)")
    g.add_argument("--burst-runs", type=int, help="burst: concurrent runs [100; quick 20]")
    g.add_argument("--burst-count", type=int, help="burst: ticks per run [1000; quick 500]")
    g.add_argument(
        "--burst-repeats",
        type=int,
        help="burst: runs of the scenario (fresh server each); the median by events/s is reported [3; quick 1]",
    )
    g.add_argument("--steady-streams", type=int, help="steady: concurrent streams [1000; quick 100]")
    g.add_argument(
        "--steady-repeats",
        type=int,
        default=1,
        help="steady: runs of the scenario, the targets alternated (a fresh server each); each figure is the"
        " median of its runs",
    )
    g.add_argument("--steady-count", type=int, help="steady: ticks per run [300; quick 50]")
    g.add_argument("--steady-interval-ms", type=int, default=100, help="steady: ms between ticks")
    g.add_argument("--idle-streams", type=int, help="idle: subscribers [10000; quick 1000]")
    g.add_argument("--idle-hold-s", type=float, help="idle: seconds to hold them all open [10; quick 4]")
    g.add_argument(
        "--idle-count",
        type=int,
        default=10,
        help="idle: ticks per run (the first comes at once, then one per interval; the runs "
        "must outlive the time it takes to open every stream plus the hold)",
    )
    g.add_argument(
        "--idle-interval-ms",
        type=int,
        default=60_000,
        help="idle: ms between ticks (runyard's ticker accepts at most 60000)",
    )
    g.add_argument("--idle-heartbeat-s", type=float, default=2.0, help="idle: RUNYARD_SSE_HEARTBEAT_S given to runyard")
    g.add_argument(
        "--idle-after",
        choices=("auto", "cancel", "close"),
        default="auto",
        help="idle: after the hold, cancel the runs (each stream must then end) or just close "
        "the streams; auto = close for the ceiling (it has no cancel), cancel for runyard",
    )
    g.add_argument("--idle-clients", type=int, default=1, help="idle: client processes sharing the streams")
    g.add_argument("--replay-count", type=int, help="replay: events in the finished run [100000; quick 10000]")
    g.add_argument("--replay-repeats", type=int, default=3, help="replay: how many times to replay it")
    c = ap.add_argument_group("client")
    c.add_argument("--clients", type=int, default=1, help="client processes for burst and steady")
    c.add_argument("--create-concurrency", type=int, default=200, help="run creations in flight at once")
    c.add_argument("--sample", type=int, default=10, help="burst: JSON-decode 1 tick in N for latency")
    c.add_argument("--steady-sample", type=int, default=1, help="steady: JSON-decode 1 tick in N")
    c.add_argument("--payload-bytes", type=int, default=0, help="ticker payload_bytes")
    c.add_argument("--timeout", type=float, default=0, help="per-scenario client deadline, s (0: from sizes)")
    s = ap.add_argument_group("servers")
    s.add_argument(
        "--shared", default=os.path.join(REPO, "..", "shared", "bench"), help="folder holding ceiling_server.py"
    )
    s.add_argument(
        "--runyard-cmd",
        default="",
        help="command starting runyard, with {port} {host} {python} placeholders "
        "(default: {python} -m runyard.cli demo --host {host} --port {port})",
    )
    s.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the runyard server (repeatable; wins over the bench's own)",
    )
    s.add_argument("--startup-timeout", type=float, default=60, help="seconds to wait for /healthz")
    s.add_argument("--keep-failed", action="store_true", help="keep the tmp dir (logs, db) of failed runs")
    ap.add_argument("--json", type=output_path, help="also write every figure to this JSON file")
    ap.add_argument(
        "--profile",
        metavar="DIR",
        help="sample each server with py-spy during the load; print where its CPU went (bench/profile.py)",
    )
    ap.add_argument(
        "--profile-rate",
        type=int,
        default=100,
        help="--profile's samples a second (a short load wants more, say 1000; default: 100)",
    )
    args = ap.parse_args(argv)
    for key, (full, quick) in SIZES.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    args.scenarios = [x.strip() for x in args.scenarios.split(",") if x.strip()]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        ap.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    args.targets = list(TARGETS) if args.target == "both" else [args.target]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    soft, hard = raise_nofile()
    cores = os.cpu_count() or 1
    log(
        f"runyard streaming benchmark - {platform.python_implementation()} {platform.python_version()}, "
        f"{cores} cores, RLIMIT_NOFILE {soft}/{hard}, targets {', '.join(args.targets)}"
        f"{' (quick)' if args.quick else ''}"
    )
    if args.idle_streams + 100 > hard and "idle" in args.scenarios:
        log(f"warning: {args.idle_streams} idle streams need more descriptors than the hard limit {hard}")
    sizes = {
        "burst": f"{args.burst_runs} runs x {args.burst_count} events, interval 0"
        f"{f', {args.burst_repeats} repeats' if args.burst_repeats > 1 else ''}",
        "steady": f"{args.steady_streams} streams x {args.steady_count} events every {args.steady_interval_ms} ms",
        "idle": f"{args.idle_streams} idle subscribers held {args.idle_hold_s:g} s "
        f"(heartbeat {args.idle_heartbeat_s:g} s on runyard)",
        "replay": f"1 finished run of {args.replay_count} events, replayed {args.replay_repeats}x",
    }
    results: dict[tuple[str, str], dict[str, Any]] = {}
    for scen in args.scenarios:
        log(f"\n== {scen}: {sizes[scen]}")
        if scen == "burst":
            log("  " + BURST_NOTE.format(cores=cores, sample=args.sample))
        results.update(alternated(scen, args))
    text, rows = table(results, args)
    log("\n" + text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "args": {k: v for k, v in vars(args).items()},
                    "cores": cores,
                    "results": [results[k] for k in sorted(results)],
                    "table": rows,
                },
                f,
                indent=1,
            )
        log(f"\nwrote {args.json}")
    failed = [r for r in results.values() if r.get("streams") is None]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
