"""Python calls per delivered event on the event loop's thread, under `streams.py`'s steady load.

A count, not a time: where CPU figures of one build vary by 10 % from one run
to the next on this shared machine, the calls a tick costs the loop's thread
are the same in every run, so two builds (or runyard and the ceiling) compare
exactly. Each target is served under cProfile (`_cprofiled.py`) for a window
once every stream is live (`--after` seconds after the server starts, for
`--for` seconds), and the calls are divided by the ticks the pipelines emitted
in that window (calls of runyard's `RunContext.emit`, of the ceiling's
`Run.append`)::

    .venv/bin/python bench/calls.py                         # the ceiling, then this checkout
    .venv/bin/python bench/calls.py --builds HEAD~1 HEAD    # two builds (git refs or src directories)

What it counts: every Python function entered, and every time a coroutine is
resumed (cProfile counts a resumption as a call), on the main thread only:
SQLite's writer and reader threads are not seen. The time beside each line is
cProfile's own, several times the real cost of a call; read it as a share.
"""

from __future__ import annotations

import argparse
import os
import pstats
import subprocess
import sys
import tempfile

from ab import REPO, STREAMS, source_of

HERE = os.path.dirname(os.path.abspath(__file__))
PROFILED = os.path.join(HERE, "_cprofiled.py")
CEILING = "ceiling"
# (file suffix, function) called once per tick a pipeline emits, per target
TICK = {CEILING: ("ceiling_server.py", "append"), "runyard": ("runyard/context.py", "emit")}


def profile(build: str, src: str | None, args: argparse.Namespace, out: str) -> None:
    """One `streams.py` steady run of ``build``, its loop's calls written to ``out``."""
    window = f"--out {out} --after {args.after} --for {args.length} --"
    if src is None:
        command = f"{{python}} {PROFILED} {window} ceiling --host {{host}} --port {{port}}"
    else:
        command = f"env PYTHONPATH={src} {{python}} {PROFILED} {window} runyard demo --host {{host}} --port {{port}}"
    load = ["--scenarios", "steady", "--steady-count", str(args.steady_count)]
    run = [sys.executable, STREAMS, "--target", "runyard", "--runyard-cmd", command, *load]
    subprocess.run(run, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    if not os.path.exists(out):
        raise SystemExit(
            f"{build}: no profile written (is --after + --for within the load's {args.steady_count} ticks?)"
        )


def report(build: str, kind: str, path: str, top: int) -> None:
    stats = pstats.Stats(path).stats  # type: ignore[attr-defined]
    suffix, name = TICK[kind]
    ticks = sum(row[1] for (file, _, function), row in stats.items() if file.endswith(suffix) and function == name)
    if not ticks:
        raise SystemExit(f"{build}: no tick was emitted in the window")
    calls = sum(row[1] for row in stats.values())
    own = sum(row[2] for row in stats.values())
    print(
        f"\n== {build}: {ticks:,} ticks; {calls / ticks:.1f} calls a tick; cProfile's time {own / ticks * 1e6:.1f} µs"
    )
    print("| calls a tick | µs a tick (cProfile's) | function |\n| ---: | ---: | --- |")
    rows = sorted(stats.items(), key=lambda item: -item[1][2])[:top]
    for (file, line, function), (_, count, own_s, _, _) in rows:
        where = os.path.relpath(file, REPO) if file.startswith(REPO) else os.path.basename(file)
        print(f"| {count / ticks:.2f} | {own_s / ticks * 1e6:.2f} | `{function}` ({where}:{line}) |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--builds",
        nargs="+",
        default=[CEILING, os.path.join(REPO, "src")],
        help="`ceiling`, git refs or src directories [ceiling and this checkout's src]",
    )
    ap.add_argument("--steady-count", type=int, default=150, help="ticks a stream (100 ms apart) [150]")
    ap.add_argument("--after", type=float, default=9.0, help="seconds after the server starts [9]")
    ap.add_argument("--for", dest="length", type=float, default=4.0, help="seconds profiled [4]")
    ap.add_argument("--top", type=int, default=25, help="functions listed, by cProfile's time [25]")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="runyard-calls-") as tmp:
        for i, build in enumerate(args.builds):
            out = os.path.join(tmp, f"{i}.prof")
            if build == CEILING:
                profile(build, None, args, out)
                report(build, CEILING, out, args.top)
            else:
                where = os.path.join(tmp, f"build{i}")
                os.makedirs(where)
                profile(build, source_of(build, where), args, out)
                report(build, "runyard", out, args.top)


if __name__ == "__main__":
    main()
