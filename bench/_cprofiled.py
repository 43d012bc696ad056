"""A server under cProfile for a window of its life (``bench/calls.py`` starts it).

    _cprofiled.py --out FILE --after S --for S -- runyard demo --host H --port P
    _cprofiled.py --out FILE --after S --for S -- ceiling --host H --port P

cProfile watches the thread that enables it: here the main thread, which runs
the event loop. A timer thread signals the process at ``--after`` seconds
(the handler, run by the main thread, starts the profiler) and again ``--for``
seconds later (it stops and writes ``--out``; with ``--for 0``, when the
server stops). Threads of the server's own
(SQLite's writer, its readers) are not seen.
"""

from __future__ import annotations

import argparse
import atexit
import cProfile
import os
import signal
import sys
import threading
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED_BENCH = os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--after", type=float, required=True)
    parser.add_argument("--for", dest="length", type=float, required=True)
    parser.add_argument("server", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    server = args.server[1:] if args.server[:1] == ["--"] else args.server
    profiler = cProfile.Profile()
    profiling = False

    def start(*_: Any) -> None:
        nonlocal profiling
        profiler.enable()
        profiling = True

    def stop(*_: Any) -> None:
        nonlocal profiling
        if profiling:
            profiler.disable()
            profiler.dump_stats(args.out)
            profiling = False

    def stop_and_exit(*_: Any) -> None:
        stop()
        raise SystemExit(0)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    # ``--for 0``: until the server stops. uvicorn raises the SIGTERM it caught
    # again once it has shut down, with the handler it found: this one.
    signal.signal(signal.SIGTERM, stop_and_exit)
    atexit.register(stop)
    windows = [(args.after, signal.SIGUSR1)] if args.after > 0 else []
    if args.after <= 0:
        start()  # from the start: the server's own start-up counted too
    if args.length > 0:
        windows.append((args.after + args.length, signal.SIGUSR2))
    for delay, signum in windows:
        timer = threading.Timer(delay, os.kill, (os.getpid(), signum))
        timer.daemon = True
        timer.start()
    if server[0] == "ceiling":
        serve_ceiling(server[1:])
    else:
        from runyard.cli import main as runyard_main

        sys.argv = ["runyard", *server[1:]]
        runyard_main()


def serve_ceiling(argv: list[str]) -> None:
    """``ceiling_server.py`` as its docstring serves it (uvicorn, uvloop, httptools)."""
    import uvicorn

    options = argparse.ArgumentParser()
    options.add_argument("--host", required=True)
    options.add_argument("--port", type=int, required=True)
    options.add_argument("--shared", default=SHARED_BENCH)
    where = options.parse_args(argv)
    sys.path.insert(0, where.shared)
    uvicorn.run(
        "ceiling_server:app",
        host=where.host,
        port=where.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
