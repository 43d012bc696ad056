"""Two builds of runyard under one `streams.py` load, measured alternately.

Each build (a git ref, exported with `git archive`, or a `src` directory) is
served by `streams.py --target runyard --runyard-cmd ...`, round after round,
in the order A B, then B A, then A B...: a slow minute of this shared machine
falls on both. Every figure is printed per run, then the median of each build.
The options after `--` go to `streams.py` unchanged (the load: a scenario and
its sizes)::

    .venv/bin/python bench/ab.py HEAD~1 HEAD --rounds 3 -- --scenarios steady
    .venv/bin/python bench/ab.py main /tmp/copy/src --rounds 4 -- --scenarios steady --steady-count 2 \\
        --steady-interval-ms 10
    .venv/bin/python bench/ab.py HEAD~1 HEAD -- --scenarios burst --burst-repeats 1

This is how `bench/README.md`'s rounds compared a change with the build before it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
STREAMS = os.path.join(HERE, "streams.py")

# (the figure's key in streams.py's JSON, its label)
FIGURES = (
    ("events_per_s", "events/s"),
    ("lat_p50_ms", "latency p50 (ms)"),
    ("lat_p99_ms", "latency p99 (ms)"),
    ("settled_p99_ms", "p99 once all are live (ms)"),
    ("live_p99_ms", "p99 of ticks emitted on an open stream (ms)"),
    ("history_p99_ms", "p99 of ticks emitted before it opened (ms)"),
    ("ttfe_p50_ms", "first event p50 (ms)"),
    ("ramp_create_p50_ms", "creation p50 (ms)"),
    ("ramp_open_p50_ms", "stream opening p50 (ms)"),
    ("ramp_first_emit_p50_ms", "first tick emitted after the creation p50 (ms)"),
    ("cpu_us_per_event", "server CPU per event (µs)"),
    ("settled_cpu_us_per_event", "the same, once all are live (µs)"),
)


def source_of(build: str, into: str) -> str:
    """The `src` directory of ``build``: itself if it is one, else the git ref exported into ``into``."""
    if os.path.isdir(os.path.join(build, "runyard")):
        return os.path.abspath(build)
    archive = subprocess.run(["git", "archive", build, "src"], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return os.path.join(into, "src")


def measure(src: str, load: list[str], out: str) -> dict[str, Any]:
    """One `streams.py` run of the build at ``src``: its runyard figures."""
    command = "env PYTHONPATH=" + src + " {python} -m runyard.cli demo --host {host} --port {port}"
    run = [sys.executable, STREAMS, "--target", "runyard", "--runyard-cmd", command, "--json", out, *load]
    subprocess.run(run, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    with open(out) as written:
        results = json.load(written)["results"]
    return dict(next(result for result in results if result.get("target") == "runyard"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", help="the build measured first: a git ref or a src directory")
    ap.add_argument("b", help="the build compared with it")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each build [3]")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, load = ap.parse_args(argv[:split]), argv[split + 1 :]  # after --: streams.py's options
    with tempfile.TemporaryDirectory(prefix="runyard-ab-") as tmp:
        sources = {}
        for name, build in (("A", args.a), ("B", args.b)):
            os.makedirs(os.path.join(tmp, name))
            sources[name] = source_of(build, os.path.join(tmp, name))
        runs: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
        for round_ in range(args.rounds):
            for name in ("A", "B") if round_ % 2 == 0 else ("B", "A"):
                figures = measure(sources[name], load, os.path.join(tmp, f"{name}-{round_}.json"))
                runs[name].append(figures)
                shown = ", ".join(f"{label} {figures.get(key)}" for key, label in FIGURES)
                print(f"{name} {round_ + 1}: {shown}", flush=True)
    print(f"\nA = {args.a}, B = {args.b}; medians of {args.rounds} runs each\n")
    print("| figure | A | B | B/A |\n| --- | ---: | ---: | ---: |")
    for key, label in FIGURES:
        a, b = (_median(runs[name], key) for name in ("A", "B"))
        ratio = f"{b / a:.2f}" if a and b is not None else ""
        print(f"| {label} | {_shown(a)} | {_shown(b)} | {ratio} |")


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [run[key] for run in runs if run.get(key) is not None]
    return statistics.median(values) if values else None


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:,.4g}"


if __name__ == "__main__":
    main()
