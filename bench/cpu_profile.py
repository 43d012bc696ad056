"""Where a server's CPU goes, sampled by py-spy while a benchmark loads it.

``bench/streams.py --profile DIR`` attaches ``py-spy record`` to the server of
each scenario it runs (after ``/healthz``, until the load ends) and prints this
module's summary: every sample is given to the runyard concern of the
innermost frame that names one (a sample in ``sqlite3`` called from the
SQLite store counts for the store), and a concern's share of the server's CPU
time is turned into microseconds per delivered event. The raw stacks stay in
DIR (``py-spy``'s ``--format raw``: one ``frame;frame;... count`` line per
stack), for ``flamegraph.pl`` or ``python bench/cpu_profile.py FILE EVENTS CPU_S``.

py-spy samples Python frames only: time in C (orjson, the socket's ``send``,
SQLite's own work) is given to the Python frame that called it, and a garbage
collection to whichever frame allocated when it started.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
from types import TracebackType

# (concern, substrings of a frame "function (path:line)"): the first concern one
# of whose substrings a frame holds names it; frames are read from the innermost out
CONCERNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("socket writes (uvicorn's send: the kernel's copy)", ("RequestResponseCycle.send (uvicorn",)),
    ("HTTP server (uvicorn: parsing, connections)", ("uvicorn/", "httptools", "runyard/http/listener.py")),
    ("SQLite store (writer and reader threads)", ("runyard/store/sqlite/", "sqlite3")),
    ("PostgreSQL store (asyncpg)", ("runyard/store/postgres/", "asyncpg/")),
    # before the event loop's: redis-py's frames are in redis/asyncio/
    ("Redis broker (redis-py: publish, subscribe)", ("runyard/broker/redis", "redis/", "hiredis")),
    ("event writer and group commit (EventLog, numbering)", ("runyard/events/log.py", "runyard/store/_numbering.py")),
    ("hub (fan-out, wake-ups)", ("runyard/events/hub.py", "runyard/broker/")),
    ("stream follow and SSE framing", ("runyard/events/stream.py", "runyard/events/sse.py", "http/streaming.py")),
    ("JSON (models: encoding events, snapshots)", ("runyard/models.py", "orjson")),
    ("pipeline code and ctx (the demo's ticker, emit, journal)", ("runyard/demo/", "runyard/context.py", "journal.py")),
    ("engine (claims, executions, leases)", ("runyard/engine/",)),
    ("runs API (create, validate, read)", ("runyard/runtime.py", "runyard/http/routes/", "runyard/pipeline.py")),
    ("ASGI layers (Starlette, FastAPI, middleware)", ("starlette/", "fastapi/", "runyard/http/")),
    ("event loop, tasks, timers", ("asyncio/", "runyard/server.py", "uvloop")),
    ("thread hand-offs (executor queues)", ("concurrent/futures/", "threading.py", "queue.py")),
)
OTHER = "other"
# An executor's thread waiting for work (``work_queue.get`` in C, its innermost
# Python frame ``_worker``) sleeps, but ``py-spy --nonblocking`` samples it as
# busy: 133 of 929 samples of a steady run (14 %) were the store's idle threads.
IDLE_LEAVES = ("_worker (concurrent/futures/thread.py",)


class Profiler:
    """``py-spy record`` attached to ``pid`` while the block runs (raw stacks into ``path``)."""

    def __init__(self, pid: int, path: str, rate: int = 100) -> None:
        self.pid, self.path, self.rate = pid, path, rate
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        exe = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        cmd = [exe, "record", "-p", str(self.pid), "-r", str(self.rate), "--format", "raw", "-o", self.path]
        # --nonblocking: never pause the server to read its stacks (the figures stay the load's)
        self._proc = subprocess.Popen([*cmd, "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._proc is None:
            return
        self._proc.send_signal(signal.SIGINT)  # py-spy writes its file when interrupted
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()


def concern_of(stack: list[str]) -> str:
    for frame in reversed(stack):
        for concern, needles in CONCERNS:
            if any(needle in frame for needle in needles):
                return concern
    return OTHER


def shares(path: str) -> tuple[dict[str, float], int]:
    """Each concern's share of the samples in a raw py-spy file, and the samples."""
    counts: collections.Counter[str] = collections.Counter()
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            frames = stack.split(";")
            if stack and not frames[-1].startswith(IDLE_LEAVES):
                counts[concern_of(frames)] += int(n)
    total = sum(counts.values())
    return ({concern: n / total for concern, n in counts.most_common()} if total else {}), total


def report(path: str, events: int | None, cpu_s: float | None) -> str:
    """A table of concerns: share of samples and, given the events delivered and
    the server's CPU seconds, microseconds of CPU per delivered event."""
    found, total = shares(path)
    if not total:
        return f"  (no samples in {path})"
    per_event = cpu_s * 1e6 / events if events and cpu_s else None
    head = f"  {total:,} samples" + (f"; server CPU {per_event:.1f} µs per delivered event" if per_event else "")
    lines = [head, "  | concern | share | µs / event |", "  | --- | ---: | ---: |"]
    for concern, share in found.items():
        micros = f"{share * per_event:.1f}" if per_event else "-"
        lines.append(f"  | {concern} | {share * 100:.1f} % | {micros} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python bench/cpu_profile.py FILE [EVENTS CPU_S]
    rest = sys.argv[2:]
    print(report(sys.argv[1], int(rest[0]) if rest else None, float(rest[1]) if len(rest) > 1 else None))
