"""Tracing benchmark: what exporting traces costs runyard, tracing off against on, in one run.

    .venv/bin/python bench/tracing.py               # 3 pairs (off, on, off, on, off, on), ~4 min
    .venv/bin/python bench/tracing.py --quick       # 1 pair, small sizes, ~1 min
    .venv/bin/python bench/tracing.py --pairs 5 --json bench/results/tracing.json

Each pair measures each scenario on runyard (``runyard demo``, SQLite, a fresh
server each time, exactly as ``streams.py`` does) with tracing **off** (no
``OTEL_*`` endpoint), then at once **on**: ``OTEL_EXPORTER_OTLP_ENDPOINT``
pointed at an OTLP/HTTP receiver in this script that decodes every export
request (the official ``opentelemetry-proto`` messages) and counts its spans.
Off and on alternate back to back, so a machine that drifts (other load, a
warming disk) drifts both alike. The scenarios:

- ``burst`` and ``steady``: ``streams.py``'s scenarios (its load client
  ``_loadgen.py``, its figures): events/s, latency p99, first event.
- ``create``: run creations only (``_loadgen.py``'s ``create`` mode, as
  ``scaleout.py`` uses it): ``--create-inflight`` ``POST /v1/runs`` in flight
  for ``--create-s`` seconds, each run a one-tick ``ticker`` that executes at
  once: creations/s and creation latency p99. Every run is one ``run ticker``
  span, so this is where tracing costs most.

The table gives the mean over the pairs for each mode, each pair's ratio
on/off and their median, against the targets (tracing on >= 0.9x off's burst
events/s, >= 0.85x off's creations/s). With tracing on, every run finished
should be one span received: the spans counted are printed beside the runs.
The server's CPU time (per run, for ``create``) is printed too: on a machine
shared with other work it moves less than the rates do; and, at the end, the
CPU one ``run`` span costs in this process (recorded, then encoded for OTLP).
``--server-env OTEL_EXPORTER_OTLP_ENDPOINT=`` turns "on" into a second "off":
an A/A control that shows how far the machine's noise alone moves the ratios.
Only 127.0.0.1 is ever used; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from statistics import fmean, median
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))  # the working tree's runyard
import streams  # noqa: E402
from _util import HOST, RssSampler, ServerProcess, free_port, output_path, raise_nofile, tree_cpu  # noqa: E402
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from scaleout import summarize_create  # noqa: E402

from runyard.models import Run, RunStatus  # noqa: E402
from runyard.observability import otel_setup, tracing  # noqa: E402

MODES = ("off", "on")
ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# option: (full size, --quick size)
SIZES: dict[str, tuple[Any, Any]] = {
    "pairs": (3, 1),
    "burst_runs": (100, 20),
    "burst_count": (1000, 500),
    "steady_streams": (500, 100),
    "steady_count": (60, 30),
    "create_s": (6.0, 3.0),
}
# (scenario, label, key, target: minimum ratio on/off, or None)
ROWS: list[tuple[str, str, str, float | None]] = [
    ("burst", "events/s", "events_per_s", 0.9),
    ("burst", "latency p99 (ms)", "lat_p99_ms", None),
    ("burst", "first event p50 (ms)", "ttfe_p50_ms", None),
    ("burst", "server CPU (s)", "server_cpu_s", None),
    ("steady", "events/s", "events_per_s", None),
    ("steady", "latency p99 (ms)", "lat_p99_ms", None),
    ("steady", "first event p50 (ms)", "ttfe_p50_ms", None),
    ("steady", "server CPU (s)", "server_cpu_s", None),
    ("create", "run creations/s", "creates_per_s", 0.85),
    ("create", "creation p99 (ms)", "create_p99_ms", None),
    ("create", "server CPU per run (ms)", "cpu_ms_per_run", None),
]


class SpanCounter:
    """An OTLP/HTTP trace receiver on loopback that counts the spans it is sent."""

    def __init__(self) -> None:
        self.spans = 0
        self.requests = 0
        self.lock = threading.Lock()

    def take(self) -> tuple[int, int]:
        """(spans, export requests) since the last take."""
        with self.lock:
            taken = self.spans, self.requests
            self.spans = self.requests = 0
        return taken

    @contextmanager
    def serving(self) -> Iterator[str]:
        counter = self
        answer = ExportTraceServiceResponse().SerializeToString()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                request = ExportTraceServiceRequest.FromString(self.rfile.read(int(self.headers["Content-Length"])))
                spans = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
                with counter.lock:
                    counter.spans += spans
                    counter.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer((HOST, 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://{HOST}:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()


def run_create(args: argparse.Namespace) -> dict[str, Any]:
    """The ``create`` scenario on a fresh runyard, started as ``streams.run_one`` starts it;
    the server stops only once every run created has finished (``runs_finished``)."""
    tmpdir = tempfile.mkdtemp(prefix="runyard-bench-tracing-create-")
    port = free_port()
    cmd, env, cwd = streams.server_spec("runyard", args, port, tmpdir, {"RUNYARD_LOG_LEVEL": "WARNING"})
    server = ServerProcess(cmd, env, cwd, os.path.join(tmpdir, "server.log"))
    res: dict[str, Any] = {"target": "runyard", "scenario": "create", "error": None}
    try:
        server.start()
        server.wait_healthy(port, args.startup_timeout)
        sampler = RssSampler(server.pid, 0.1).start()
        cpu0 = tree_cpu(server.pid)
        deadline = args.create_s + 120
        cfg = {
            "url": f"http://{HOST}:{port}",
            "mode": "create",
            "indices": [0, args.create_inflight, 1],
            "count": 1,
            "payload_bytes": 0,
            "create_concurrency": args.create_inflight,
            "duration_s": args.create_s,
            "deadline_s": deadline,
        }
        client, problems = streams.run_clients([cfg], tmpdir, deadline + 60)
        res["server_cpu_s"] = round(tree_cpu(server.pid) - cpu0, 2)
        res["rss_peak_mib"] = round(sampler.stop() / streams.MIB, 1)
        if client is not None:
            summarize_create(client, res)
            res["runs_finished"] = finished_runs(port, client.get("created", 0))
            # its CPU once they all ran (and exported): the cost per run, less swayed by other load
            res["cpu_ms_per_run"] = round((tree_cpu(server.pid) - cpu0) * 1000 / max(1, res["runs_finished"]), 3)
        res["error"] = "; ".join(problems) or None
    except Exception as e:  # reported, not fatal: the other measurements go on
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        server.stop()
        shutil.rmtree(tmpdir, ignore_errors=True)
    return res


def finished_runs(port: int, created: int, timeout_s: float = 60.0) -> int:
    """``runyard_runs_total`` once it counts ``created`` runs (or ``timeout_s`` passed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        done = sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("runyard_runs_total{")
        )
        if done >= created or time.monotonic() > deadline:
            return int(done)
        time.sleep(0.2)


def measure(scenario: str, args: argparse.Namespace) -> dict[str, Any]:
    if scenario == "create":
        return run_create(args)
    return streams.run_one("runyard", scenario, args)


def span_cost(n: int = 5000, batch: int = 512) -> tuple[float, float]:
    """CPU microseconds per ``run`` span in this process: recorded (started with its
    attributes, current, ended, as an execution does) and encoded for OTLP (as the
    export thread does, in batches): what tracing adds to each execution, free of
    the noise of a shared machine."""
    recorded = InMemorySpanExporter()
    provider = otel_setup.provider(SimpleSpanProcessor(recorded))
    runs = [Run(f"run_{i}", "ses_bench", "load-1", "ticker", RunStatus.RUNNING, None, 0.0) for i in range(n)]
    with tracing.using(provider.get_tracer("runyard")):
        started = time.process_time()
        for run in runs:
            with tracing.run_span(run) as traced:
                assert traced is not None
                traced.ended(None)
        record = time.process_time() - started
    spans = recorded.get_finished_spans()
    started = time.process_time()
    for i in range(0, n, batch):
        encode_spans(spans[i : i + batch]).SerializeToString()
    encode = time.process_time() - started
    return record / n * 1e6, encode / n * 1e6


def mode_env(mode: str, endpoint: str) -> list[str]:
    """``--server-env`` entries of a mode: on exports to ``endpoint``; off has no endpoint at all."""
    if mode == "on":
        return [f"OTEL_EXPORTER_OTLP_ENDPOINT={endpoint}", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="]
    return [f"{name}=" for name in ENDPOINTS]  # empty: not inherited from this shell either


def one_line(mode: str, res: dict[str, Any], spans: int) -> str:
    if res.get("error") and res.get("events_per_s") is None and res.get("creates_per_s") is None:
        return f"  {mode:3s} FAILED: {res['error']}"
    parts = [f"{streams.fmt(res.get(key))} {label}" for scen, label, key, _ in ROWS if scen == res["scenario"]]
    parts.append(f"violations {res.get('violations_total')}")
    if res["scenario"] == "create":
        parts.append(f"{res.get('runs_finished')} runs finished")
    if mode == "on":
        parts.append(f"{spans:,} spans received")
    return f"  {mode:3s} " + "; ".join(parts) + (f" (problems: {res['error']})" if res.get("error") else "")


def table(results: dict[tuple[str, str], list[dict[str, Any]]], scenarios: list[str]) -> tuple[str, list[Any]]:
    """Means over the pairs, each pair's ratio on/off, and their median (the verdict: a pair's
    two measurements are minutes apart, so drift on a shared machine cancels within it)."""
    lines = [
        "| scenario | metric | off (mean) | on (mean) | on / off, each pair | on / off (median) | target | ok |",
        "| --- | --- | ---: | ---: | --- | ---: | --- | --- |",
    ]
    rows = []
    for scen, label, key, minimum in ROWS:
        if scen not in scenarios:
            continue
        pairs = zip(results.get((scen, "off"), []), results.get((scen, "on"), []), strict=True)
        values = [(off.get(key), on.get(key)) for off, on in pairs]
        ratios = [on / off for off, on in values if off and on is not None]
        ratio = median(ratios) if ratios else None
        off_mean = fmean(v for v, _ in values if v is not None) if any(v is not None for v, _ in values) else None
        on_mean = fmean(v for _, v in values if v is not None) if any(v is not None for _, v in values) else None
        ok = None if minimum is None or ratio is None else ratio >= minimum
        cells = [
            streams.fmt(off_mean),
            streams.fmt(on_mean),
            ", ".join(f"{r:.2f}" for r in ratios),
            f"{ratio:.2f}x" if ratio is not None else "-",
            f">= {minimum}x" if minimum is not None else "",
            "" if ok is None else ("yes" if ok else "**NO**"),
        ]
        lines.append(f"| {scen} | {label} | " + " | ".join(cells) + " |")
        rows.append({"scenario": scen, "metric": label, "pairs": values, "ratio": ratio, "ok": ok})
    return "\n".join(lines), rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 pair, sizes about 5x smaller (smoke test)")
    ap.add_argument("--pairs", type=int, help="off/on pairs [3; quick 1]")
    ap.add_argument("--scenarios", default="burst,steady,create", help="a subset of burst,steady,create")
    ap.add_argument("--burst-runs", type=int, help="burst: concurrent runs [100; quick 20]")
    ap.add_argument("--burst-count", type=int, help="burst: ticks per run [1000; quick 500]")
    ap.add_argument("--steady-streams", type=int, help="steady: concurrent streams [500; quick 100]")
    ap.add_argument("--steady-count", type=int, help="steady: ticks per run, one per 100 ms [60; quick 30]")
    ap.add_argument("--create-s", type=float, help="create: seconds of creations [6; quick 3]")
    ap.add_argument("--create-inflight", type=int, default=64, help="create: requests in flight")
    ap.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE", help="more runyard settings")
    ap.add_argument("--json", type=output_path, help="also write every figure to this JSON file")
    ours = ap.parse_args(argv)
    for key, (full, quick) in SIZES.items():
        if getattr(ours, key) is None:
            setattr(ours, key, quick if ours.quick else full)
    ours.scenarios = [s.strip() for s in ours.scenarios.split(",") if s.strip()]
    # streams.py's own options (server command, client, timeouts) with our sizes
    args = streams.parse_args(
        [
            "--target=runyard",
            "--scenarios=burst,steady",
            f"--burst-runs={ours.burst_runs}",
            f"--burst-count={ours.burst_count}",
            "--burst-repeats=1",  # the pairs repeat
            f"--steady-streams={ours.steady_streams}",
            f"--steady-count={ours.steady_count}",
        ]
    )
    for key, value in vars(ours).items():
        if key != "server_env":
            setattr(args, key, value)
    args.base_env = ours.server_env
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile()
    counter = SpanCounter()
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    spans_seen: dict[str, list[int]] = {}
    streams.log(
        f"runyard tracing benchmark: {args.pairs} pair(s) of off/on, {os.cpu_count()} cores; "
        f"burst {args.burst_runs} runs x {args.burst_count} events, steady {args.steady_streams} streams x "
        f"{args.steady_count} events every 100 ms, create {args.create_inflight} in flight for {args.create_s:g} s"
    )
    started = time.monotonic()
    with counter.serving() as endpoint:
        for pair in range(1, args.pairs + 1):
            for scen in args.scenarios:
                streams.log(f"pair {pair} {scen}")
                for mode in MODES:  # back to back: the pair's two measurements seconds apart
                    args.server_env = [*mode_env(mode, endpoint), *args.base_env]
                    counter.take()
                    res = measure(scen, args)  # the server has stopped: its spans were flushed
                    spans, _ = counter.take()
                    res.update(mode=mode, pair=pair, spans=spans)
                    results.setdefault((scen, mode), []).append(res)
                    if mode == "on":
                        spans_seen.setdefault(scen, []).append(spans)
                    streams.log(one_line(mode, res, spans))
    text, rows = table(results, args.scenarios)
    streams.log(f"\n{text}\n\nspans received with tracing on: {spans_seen}; {time.monotonic() - started:.0f} s in all")
    record_us, encode_us = span_cost()
    streams.log(f"in this process, CPU per run span: {record_us:.1f} us recorded + {encode_us:.1f} us encoded for OTLP")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": [r for rs in results.values() for r in rs], "table": rows}, f, indent=1)
    return 1 if any(r.get("error") for rs in results.values() for r in rs) else 0


if __name__ == "__main__":
    sys.exit(main())
