"""Helpers shared by the benchmark driver (``streams.py``) and its load client
(``_loadgen.py``): percentiles, file-descriptor limits, free ports, starting and
stopping a server process group, sampling its memory and CPU with psutil, a
PostgreSQL database of a benchmark's own (``postgres_database``), and the
plumbing of the benchmarks that measure two builds alternately in child
processes (``add_build_arguments``, ``run_child``).

Nothing here talks to any host but 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

HOST = "127.0.0.1"


def output_path(path: str) -> str:
    """An ``argparse`` type for a file written when a run ends: its directory is made
    now, so a run of minutes does not fail at its last step for want of it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return path


def pct(xs: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of ``xs`` (``p`` in 0..100); None when empty."""
    if not xs:
        return None
    ys = sorted(xs)
    k = min(len(ys) - 1, max(0, math.ceil(p / 100 * len(ys)) - 1))
    return ys[k]


def median(xs: Sequence[float]) -> float | None:
    return pct(xs, 50)


def raise_nofile() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _tree(pid: int) -> list[Any]:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants, in bytes."""
    return _rss_of(_tree(pid))


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds used so far by a process and its live descendants."""
    return _cpu_of(_tree(pid))


def _rss_of(procs: list[Any]) -> int:
    import psutil

    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def _cpu_of(procs: list[Any]) -> float:
    import psutil

    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


class RssSampler:
    """Samples the RSS of a process tree in a background thread; keeps the peak,
    and each sample's time and the tree's CPU seconds so far (``cpu_trace``: the
    CPU of a stretch of the run, ``cpu_between``)."""

    def __init__(self, pid: int, interval_s: float = 0.1) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak = 0
        self.last = 0
        self.samples = 0
        self.cpu_trace: list[tuple[float, float]] = []  # (time.time(), CPU seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> int:
        procs = _tree(self.pid)  # one walk of the tree for both readings
        rss = _rss_of(procs)
        self.cpu_trace.append((time.time(), _cpu_of(procs)))
        if rss:
            self.last = rss
            self.peak = max(self.peak, rss)
            self.samples += 1
        return rss

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()
        return self.peak


def cpu_between(trace: list[tuple[float, float]], start: float, end: float) -> float | None:
    """CPU seconds a sampled process tree used from ``start`` to ``end`` (epoch
    seconds), each read between the two samples around it; None unless the trace
    spans both."""
    if len(trace) < 2 or not trace[0][0] <= start < end <= trace[-1][0]:
        return None

    def at(when: float) -> float:
        for (t0, c0), (t1, c1) in itertools.pairwise(trace):
            if t0 <= when <= t1:
                return c0 + (c1 - c0) * ((when - t0) / (t1 - t0) if t1 > t0 else 0.0)
        return trace[-1][1]

    return at(end) - at(start)


def _raise_nofile_preexec() -> None:  # runs in the child between fork and exec
    raise_nofile()


class ServerProcess:
    """A server started in its own process group (so that it and anything it forks
    can be stopped together by that group's id), with its output in a log file."""

    def __init__(self, cmd: list[str], env: dict[str, str], cwd: str, log_path: str) -> None:
        self.cmd, self.env, self.cwd, self.log_path = cmd, env, cwd, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.cmd,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_raise_nofile_preexec,
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_healthy(self, port: int, timeout_s: float, path: str = "/healthz") -> None:
        """Polls GET ``path`` until it answers 200; raises if the process exits or time runs out."""
        deadline = time.monotonic() + timeout_s
        url = f"http://{HOST}:{port}{path}"
        last_err = "no answer"
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(
                    f"server exited with status {self.proc.returncode if self.proc else '?'} "
                    f"before {path} answered; log tail:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
                    last_err = f"status {r.status}"
            except (urllib.error.URLError, OSError) as e:
                last_err = str(e)
            time.sleep(0.1)
        raise RuntimeError(f"{path} did not answer 200 within {timeout_s}s ({last_err}); log tail:\n{self.log_tail()}")

    def stop(self, grace_s: float = 5.0) -> int | None:
        """SIGTERM the server's process group, then SIGKILL it after ``grace_s``."""
        if self.proc is None:
            return None
        pgid = self.proc.pid  # start_new_session: the group id is the server's pid
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace_s)
        # whatever is left of the group (the server or anything it forked) goes now
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=grace_s)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def log_tail(self, n: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 8192))
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return "(no log)"


@contextlib.asynccontextmanager
async def postgres_database(admin_url: str) -> AsyncIterator[str]:
    import asyncpg  # only when a benchmark is asked to measure PostgreSQL

    name = f"runyard_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


BENCH = os.path.dirname(os.path.abspath(__file__))


def add_build_arguments(ap: argparse.ArgumentParser, repeats: int) -> None:
    """The options of a benchmark that measures two builds of runyard alternately."""
    ap.add_argument("--base-src", default="/work/main/src", help="the build measured first (default: main)")
    ap.add_argument(
        "--head-src", default=os.path.join(os.path.dirname(BENCH), "src"), help="the build compared with it"
    )
    ap.add_argument("--repeats", type=int, default=repeats, help="alternations base/head")
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)


def builds(args: argparse.Namespace) -> dict[str, str]:
    """The two builds ``add_build_arguments`` names, in the order they are measured."""
    return {"base": args.base_src, "head": args.head_src}


Child = Callable[[argparse.Namespace], Coroutine[Any, Any, Any]]


def answered_as_child(args: argparse.Namespace, child: Child) -> bool:
    """In the child process (``--child``): print what ``child`` measured, as JSON."""
    if not args.child:
        return False
    print(json.dumps(asyncio.run(child(args))))
    return True


def run_child(script: str, src: str, options: Sequence[str]) -> dict[str, Any]:
    """Run ``script --child options`` with build ``src`` first on the path; the JSON
    object it printed last."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join((src, BENCH)))
    out = subprocess.run(
        [sys.executable, script, "--child", *options], env=env, capture_output=True, text=True, timeout=600
    )
    if out.returncode != 0:
        raise SystemExit(f"{os.path.basename(script)} with {src} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))
