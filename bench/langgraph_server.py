"""runyard against LangGraph's own server, on the same graph through the same SDK
(issue 14 item 7).

The load: ``--runs`` concurrent runs (100) of ``--count`` custom events (1,000)
each, every run created and streamed through the real ``langgraph_sdk`` client
(``_lgclient.py``), on three targets:

- ``langgraph-dev``: LangGraph's server, ``langgraph dev`` (in memory, no reload,
  ``--n-jobs-per-worker`` = the runs), from ``langgraph-cli[inmem]`` installed
  from PyPI into a virtualenv of its own (``bench/.venvs/``, made once; never a
  dependency of runyard);
- ``langgraph``: runyard's LangGraph API at ``/langgraph``, stream mode ``custom``;
- ``v1``: runyard's own API, ``POST /v1/runs/stream`` (create and stream in one request, as ``runs.stream``).

Every server runs the same graph (``_lggraph.py``: one node writing the events
with ``get_stream_writer()``); runyard serves it through its LangGraph adapter
(``_lgapp.py``) on its default durable store (SQLite), LangGraph in memory.
One run in ``--rejoin-every`` drops its stream halfway and rejoins from its last
event id; duplicates and gaps are counted on every run.

    .venv/bin/python bench/langgraph_server.py --quick     # smoke test
    .venv/bin/python bench/langgraph_server.py             # 2 rounds x 3 targets x 100 runs x 1,000 events

Each target gets a fresh server per round; the targets alternate within a round
and the figures are medians over the rounds. Only 127.0.0.1 is used (and PyPI,
once, to build the virtualenv).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from _util import HOST, ServerProcess, free_port, pct, tree_cpu

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TARGETS = ("langgraph-dev", "langgraph", "v1")
LABELS = {
    "langgraph-dev": "LangGraph `langgraph dev` (in-memory)",
    "langgraph": "runyard `/langgraph`",
    "v1": "runyard `/v1`",
}
CLI_SPEC = "langgraph-cli[inmem]>=0.4.40,<0.5"
ASSISTANT = "ticks"
PROBE_COUNT = 100  # events of each run of the TTFE probe


# --------------------------------------------------------------------------- LangGraph's server


def langgraph_venv(path: str, spec: str) -> str:
    """The ``langgraph`` executable of a virtualenv holding ``spec``, made once
    (again if the spec changed)."""
    exe, stamp = os.path.join(path, "bin", "langgraph"), os.path.join(path, "spec.txt")
    if os.path.exists(exe) and os.path.exists(stamp):
        with open(stamp) as f:
            if f.read() == spec:
                return exe
    print(f"building {path} with {spec} (once) ...", file=sys.stderr, flush=True)
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", path], check=True)
    pip = [os.path.join(path, "bin", "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, spec], check=True)
    with open(stamp, "w") as f:
        f.write(spec)
    return exe


def langgraph_dev_spec(exe: str, port: int, tmpdir: str, runs: int) -> tuple[list[str], dict[str, str]]:
    """``langgraph dev`` serving a copy of the graph from ``tmpdir``: no reload, no
    browser, a job slot per run, quiet, no analytics or tracing."""
    shutil.copy(os.path.join(HERE, "_lggraph.py"), tmpdir)
    with open(os.path.join(tmpdir, "langgraph.json"), "w") as f:
        json.dump({"dependencies": ["."], "graphs": {ASSISTANT: "./_lggraph.py:graph"}}, f)
    cmd = [exe, "dev", "--no-browser", "--no-reload", "--host", HOST, "--port", str(port)]
    cmd += ["--n-jobs-per-worker", str(runs), "--server-log-level", "WARNING", "--config", "langgraph.json"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    env.update(LANGGRAPH_CLI_NO_ANALYTICS="1", LANGSMITH_TRACING="false", LANGCHAIN_TRACING_V2="false")
    return cmd, env


# --------------------------------------------------------------------------- runyard


def runyard_spec(args: argparse.Namespace, port: int, tmpdir: str) -> tuple[list[str], dict[str, str]]:
    """runyard serving ``_lgapp:app`` (the graph as the pipeline ``ticks``) from
    ``--runyard-src``, on SQLite in ``tmpdir``, every run at once, quiet."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"}
    paths = [os.path.abspath(args.runyard_src), HERE] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(
        RUNYARD_STORE=f"sqlite:///{tmpdir}/bench.db",
        RUNYARD_MAX_CONCURRENT_RUNS=str(max(64, args.runs)),
        RUNYARD_LOG_LEVEL="WARNING",
    )
    for kv in args.server_env:  # the user's word wins
        k, _, v = kv.partition("=")
        env[k] = v
    cmd = shlex.split(args.runyard_cmd.format(python=sys.executable, host=HOST, port=port))
    return cmd, env


# --------------------------------------------------------------------------- the load


class Client:
    """One ``_lgclient.py`` process; its stdout JSON lines are read by a thread."""

    def __init__(self, cfg: dict[str, Any], log_path: str) -> None:
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        argv = [sys.executable, os.path.join(HERE, "_lgclient.py"), json.dumps(cfg)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, cwd=HERE)
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.lines.put(json.loads(raw))
        self.lines.put(None)

    def next(self, want: str, deadline: float) -> dict[str, Any] | None:
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self.lines.get(timeout=left)
            except queue.Empty:
                return None
            if msg is None or msg.get("event") == want:
                return msg
        return None

    def go(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.write(b"GO\n")
            self.proc.stdin.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # only on timeout: a client ends by itself otherwise
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.log.close()


def load(target: str, url: str, args: argparse.Namespace, tmpdir: str, probe: bool = False) -> dict[str, Any]:
    """Runs the load on ``url`` from ``--clients`` processes started together, their
    results added up; or, with ``probe``, ``--probe-runs`` short runs one after
    another from one process (the time to first event of a run alone)."""
    protocol = "v1" if target == "v1" else "langgraph"
    base = url + "/langgraph" if target == "langgraph" else url
    runs, count, shards = (args.probe_runs, PROBE_COUNT, 1) if probe else (args.runs, args.count, args.clients)
    rejoin = list(range(0, runs, args.rejoin_every)) if args.rejoin_every and not probe else []
    deadline = time.monotonic() + args.timeout
    clients = []
    for k in range(shards):
        cfg = {"protocol": protocol, "url": base, "assistant": ASSISTANT, "count": count, "sequential": probe}
        cfg.update(indexes=list(range(k, runs, shards)), rejoin=rejoin, deadline_s=args.timeout)
        cfg["warmup"] = k == 0 and not probe
        clients.append(Client(cfg, os.path.join(tmpdir, f"client{k}{'-probe' if probe else ''}.log")))
    try:
        if any(c.next("ready", deadline) is None for c in clients):
            raise RuntimeError(f"a client never got ready: {[c.proc.poll() for c in clients]}")
        for c in clients:
            c.go()
        results = [c.next("result", deadline) for c in clients]
    finally:
        for c in clients:
            c.close()
    if any(r is None for r in results):
        raise RuntimeError("a client gave no result in time")
    return merge([r for r in results if r is not None])


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"t_start": min(r.get("t_start", 0) for r in results)}
    out["t_end"] = max(r.get("t_end", 0) for r in results)
    for r in results:
        for k, v in r.items():
            if isinstance(v, list):
                out[k] = out.get(k, []) + v
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("t_start", "t_end"):
                out[k] = out.get(k, 0) + v
    return out


def run_one(target: str, args: argparse.Namespace) -> dict[str, Any]:
    """A fresh server for ``target``, the load on it, its figures."""
    tmpdir = tempfile.mkdtemp(prefix=f"runyard-lgbench-{target}-")
    port = free_port()
    if target == "langgraph-dev":
        cmd, env = langgraph_dev_spec(args.langgraph_exe, port, tmpdir, args.runs)
        health = "/ok"
    else:
        cmd, env = runyard_spec(args, port, tmpdir)
        health = "/healthz"
    server = ServerProcess(cmd, env, tmpdir, os.path.join(tmpdir, "server.log"))
    res: dict[str, Any] = {"target": target}
    try:
        server.start()
        server.wait_healthy(port, args.startup_timeout, health)
        if target == "langgraph":
            has_langgraph_api(port)
        cpu0 = tree_cpu(server.pid)
        got = load(target, f"http://{HOST}:{port}", args, tmpdir)
        res["server_cpu_s"] = round(tree_cpu(server.pid) - cpu0, 2)
        if args.probe_runs:
            alone = load(target, f"http://{HOST}:{port}", args, tmpdir, probe=True).get("ttfe_ms", [])
            res.update(alone_p50_ms=pct(alone, 50), alone_p99_ms=pct(alone, 99))
        elapsed = max(1e-9, got["t_end"] - got["t_start"])
        ttfe = got.get("ttfe_ms", [])
        res.update(
            events=got.get("events", 0),
            elapsed_s=round(elapsed, 2),
            events_per_s=round(got.get("events", 0) / elapsed),
            server_cpu_us_per_event=round(res["server_cpu_s"] * 1e6 / max(1, got.get("events", 0)), 1),
            ttfe_p50_ms=pct(ttfe, 50),
            ttfe_p99_ms=pct(ttfe, 99),
            complete=got.get("complete", 0),
            **{k: got.get(k, 0) for k in ("rejoins", "rejoin_dups", "rejoin_gaps", "dups", "gaps", "foreign")},
            client_cpu_s=round(got.get("client_cpu_s", 0), 2),
            errors=got.get("errors", []),
            error_count=got.get("error_count", 0),
        )
    except Exception as e:  # a target that cannot start or crashes is reported, not fatal
        res["error"] = f"{type(e).__name__}: {e}\n{server.log_tail(10)}"
    finally:
        server.stop()
        if args.keep_failed and (res.get("error") or res.get("error_count")):
            print(f"  kept {tmpdir}", file=sys.stderr)
        else:
            shutil.rmtree(tmpdir, ignore_errors=True)
    return res


def has_langgraph_api(port: int) -> None:
    """Raises, saying so, if the runyard served has no LangGraph API (a checkout
    before it: ``--runyard-src`` may name another)."""
    url = f"http://{HOST}:{port}/langgraph/assistants/{ASSISTANT}"
    try:
        with urllib.request.urlopen(url, timeout=10):
            return
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"GET {url} answered {e.code}: this runyard has no /langgraph API") from e


# --------------------------------------------------------------------------- the report


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds of the rates and latencies; counts added up."""
    ok = [r for r in rounds if "error" not in r]
    if not ok:
        return {"error": rounds[-1].get("error", "no round")}

    def med(key: str) -> Any:
        values = [r[key] for r in ok if r.get(key) is not None]
        return statistics.median(values) if values else None

    medians = ("events_per_s", "ttfe_p50_ms", "ttfe_p99_ms", "alone_p50_ms", "alone_p99_ms", "server_cpu_us_per_event")
    out = {k: med(k) for k in (*medians, "client_cpu_s")}
    out["client_cpu_s"] = round(out["client_cpu_s"] or 0, 2)
    for k in ("rejoins", "rejoin_dups", "rejoin_gaps", "dups", "gaps", "foreign", "complete", "error_count"):
        out[k] = sum(r.get(k, 0) for r in ok)
    out["runs"] = len(ok) * rounds[0].get("runs", 0)
    out["rounds"] = len(ok)
    return out


def table(sums: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"{args.runs} concurrent runs x {args.count:,} custom events, median of {args.rounds} round(s); "
        f"1 run in {args.rejoin_every} drops its stream halfway and rejoins; TTFE alone: {args.probe_runs} runs "
        f"of {PROBE_COUNT} events one after another on the same server afterwards",
        "",
        "| target | events/s | TTFE p50 / p99 under load | TTFE p50 / p99 alone | rejoins | dups / gaps (rejoined) "
        "| dups / gaps (all) | complete runs | server CPU µs/event | client CPU s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for target, s in sums.items():
        if "error" in s:
            lines.append(f"| {LABELS[target]} | failed: {s['error'].splitlines()[0][:120]} |")
            continue
        lines.append(
            f"| {LABELS[target]} | {s['events_per_s']:,.0f} | {ms(s['ttfe_p50_ms'])} / {ms(s['ttfe_p99_ms'])} "
            f"| {ms(s['alone_p50_ms'])} / {ms(s['alone_p99_ms'])} "
            f"| {s['rejoins']} | {s['rejoin_dups']} / {s['rejoin_gaps']} | {s['dups']} / {s['gaps']} "
            f"| {s['complete']}/{args.runs * s['rounds']} | {s['server_cpu_us_per_event']} | {s['client_cpu_s']} |"
        )
    rate = {t: s.get("events_per_s") for t, s in sums.items() if "error" not in s}
    if rate.get("langgraph") and rate.get("v1"):
        lines.append(f"\n/langgraph vs /v1: {rate['langgraph'] / rate['v1']:.2f}x events/s (target >= 0.8x)")
    if rate.get("langgraph") and rate.get("langgraph-dev"):
        lines.append(
            f"/langgraph vs langgraph dev: {rate['langgraph'] / rate['langgraph-dev']:.1f}x events/s (target >= 5x)"
        )
    if rate.get("v1") and rate.get("langgraph-dev"):
        lines.append(f"/v1 vs langgraph dev: {rate['v1'] / rate['langgraph-dev']:.1f}x events/s")
    return "\n".join(lines)


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", default=",".join(TARGETS), help=f"a subset of {','.join(TARGETS)}, in that order")
    p.add_argument("--runs", type=int, help="concurrent runs (default 100; --quick 20)")
    p.add_argument("--count", type=int, help="events per run (default 1000; --quick 200)")
    p.add_argument("--rounds", type=int, help="rounds over the targets, medians quoted (default 2; --quick 1)")
    p.add_argument("--rejoin-every", type=int, default=10, help="1 run in N drops and rejoins (0: none)")
    p.add_argument("--probe-runs", type=int, help="runs of the TTFE-alone probe (default 20; --quick 5; 0: none)")
    p.add_argument("--clients", type=int, default=1, help="load-client processes (default 1)")
    p.add_argument("--quick", action="store_true", help="a smoke test: fewer, shorter runs, one round")
    p.add_argument("--runyard-cmd", default="{python} -m runyard.cli serve _lgapp:app --host {host} --port {port}")
    p.add_argument("--runyard-src", default=os.path.join(REPO, "src"), help="runyard's source put on PYTHONPATH")
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE", help="runyard's environment")
    p.add_argument("--venv", default=os.path.join(HERE, ".venvs", "langgraph-cli"), help="LangGraph's virtualenv")
    p.add_argument("--langgraph-cli", default=CLI_SPEC, help=f"what to install in it (default {CLI_SPEC!r})")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds allowed to one target's load")
    p.add_argument("--startup-timeout", type=float, default=90.0)
    p.add_argument("--json", help="write every round's figures here")
    p.add_argument("--keep-failed", action="store_true", help="keep the temp dir (server and client logs) of a failure")
    args = p.parse_args()
    quick = args.quick
    args.runs = args.runs or (20 if quick else 100)
    args.count = args.count or (200 if quick else 1000)
    args.rounds = args.rounds or (1 if quick else 2)
    args.probe_runs = (5 if quick else 20) if args.probe_runs is None else args.probe_runs
    args.targets = [t for t in args.targets.split(",") if t]
    if unknown := set(args.targets) - set(TARGETS):
        p.error(f"unknown targets {sorted(unknown)}")
    return args


def main() -> int:
    args = parse_args()
    if "langgraph-dev" in args.targets:
        args.langgraph_exe = langgraph_venv(args.venv, args.langgraph_cli)
    rounds: dict[str, list[dict[str, Any]]] = {t: [] for t in args.targets}
    for n in range(args.rounds):
        order = args.targets if n % 2 == 0 else args.targets[::-1]  # alternate: no target always goes first
        for target in order:
            print(f"round {n + 1}/{args.rounds}: {target} ...", file=sys.stderr, flush=True)
            res = run_one(target, args)
            res["runs"] = args.runs
            rounds[target].append(res)
            brief = res.get("error") or f"{res['events_per_s']:,} events/s, TTFE p50 {ms(res['ttfe_p50_ms'])}"
            print(f"  {brief}", file=sys.stderr, flush=True)
    sums = {t: summary(rs) for t, rs in rounds.items()}
    print(table(sums, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items()}, "rounds": rounds, "summary": sums}, f, indent=1)
    # a target that could not run fails the benchmark; so does a runyard run that lost or repeated an
    # event. LangGraph's own duplicates or gaps are a finding, reported in the table, not a failure here.
    failed = any(
        "error" in s or (t != "langgraph-dev" and (s.get("error_count") or s.get("dups") or s.get("gaps")))
        for t, s in sums.items()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
