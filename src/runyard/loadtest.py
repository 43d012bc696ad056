"""``runyard loadtest``: many users at once against a server, every event checked.

N sessions start together. Each is its own owner (``X-Client-Id: <prefix>-<i>``,
unless a client id or token is given) with a marker of its own, and creates
``ticker`` runs one after another in one session, reading each run's stream and
resuming it with ``Last-Event-ID`` when it drops. Every event is checked as it
arrives; a violation is one of ``KINDS``:

    gap               seq jumped past previous + 1: an event was lost
    duplicate         seq not above the previous one: an event came twice
    foreign_marker    a tick carrying another session's marker: isolation broken
    tick_order        a tick whose ``i`` is not the previous + 1
    tick_count        the run succeeded with another number of ticks than asked
    bad_frame         an SSE frame that is no event, or whose ``id`` is not its ``seq``
    event_after_end   anything after ``end``, a second ``end`` included
    open_after_end    the stream stayed open after ``end``
    run_failed        ``end`` with a status other than ``succeeded``
    snapshot_mismatch ``GET /v1/runs/{id}`` disagrees with the stream
    session_mismatch  a later run of the session landed in another session
    stream_lost       no ``end``: the stream could not be resumed
    timeout           no ``end`` when ``--timeout`` ran out
    http_error        an error answer; transport_error: no answer; bad_response: not the contract's JSON

Tick latency is the receive time minus the tick's ``t``, the server's wall clock
against this machine's: exact only when both share a clock (loopback).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import ssl
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from rich.console import Console
from rich.table import Table
from rich.text import Text

from runyard.cli_view import compact
from runyard.client import APIError, api_error
from runyard.demo.ticker import MAX_COUNT, MAX_INTERVAL_MS
from runyard.events.sse import SSEFrame, SSEParser, decode_event

PIPELINE = "ticker"
KINDS = (
    "gap",
    "duplicate",
    "foreign_marker",
    "tick_order",
    "tick_count",
    "bad_frame",
    "event_after_end",
    "open_after_end",
    "run_failed",
    "snapshot_mismatch",
    "session_mismatch",
    "stream_lost",
    "timeout",
    "http_error",
    "transport_error",
    "bad_response",
)
CLOCK_NOTE = "tick latency: arrival minus the tick's t (server clock); exact on loopback"
LISTED = 100  # violations kept with their details; all of them are counted
RECONNECTS = 5  # consecutive reconnects without a new event before a stream counts as lost
REQUEST_RETRIES = 2  # for a pooled connection the server closed just as it was reused
END_GRACE_S = 5.0  # how long a stream may stay open after its end event (a busy client reads late)


@dataclass(frozen=True, slots=True)
class Config:
    """What to run: the flags of ``runyard loadtest``, checked."""

    url: str
    sessions: int = 50
    events: int = 100
    interval_ms: int = 50
    duration_s: float | None = None
    timeout_s: float | None = None
    client_id: str | None = None
    token: str | None = None
    # New for every test, so owners, markers and idempotency keys never meet an earlier test's.
    prefix: str = field(default_factory=lambda: f"lt-{secrets.token_hex(4)}")

    def __post_init__(self) -> None:
        rules = [
            (self.sessions >= 1, "--sessions must be at least 1"),
            (0 <= self.events <= MAX_COUNT, f"--events must be between 0 and {MAX_COUNT}"),
            (0 <= self.interval_ms <= MAX_INTERVAL_MS, f"--interval-ms must be between 0 and {MAX_INTERVAL_MS}"),
            (self.duration_s is None or self.duration_s > 0, "--duration must be positive"),
            (self.timeout_s is None or self.timeout_s > 0, "--timeout must be positive"),
        ]
        for ok, message in rules:
            if not ok:
                raise ValueError(message)

    @property
    def shared_owner(self) -> bool:
        return bool(self.client_id or self.token)

    def owner(self, session: int) -> str | None:
        """The ``X-Client-Id`` of a session: its own, unless one was given (or a token says who)."""
        return self.client_id if self.shared_owner else f"{self.prefix}-{session}"

    @property
    def deadline_s(self) -> float:
        """``--timeout``, else the duration plus one run's length plus a minute of slack."""
        if self.timeout_s is not None:
            return self.timeout_s
        return (self.duration_s or 0.0) + self.events * self.interval_ms / 1000 + 60.0


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str
    session: int
    run_id: str | None
    detail: str


@dataclass(slots=True)
class Tally:
    """Everything measured, shared by all sessions (one event loop, so no locks)."""

    runs: int = 0
    succeeded: int = 0
    events: int = 0
    ticks: int = 0
    reconnects: int = 0
    retries: int = 0
    tick_ms: list[float] = field(default_factory=list)
    create_ms: list[float] = field(default_factory=list)
    by_kind: Counter[str] = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)

    def violate(self, kind: str, session: int, run_id: str | None, detail: str) -> None:
        self.by_kind[kind] += 1
        if len(self.violations) < LISTED:  # a broken server may break every event: keep memory bounded
            self.violations.append(Violation(kind, session, run_id, detail))


def _field(data: Any, key: str) -> Any:
    return data.get(key) if isinstance(data, dict) else None


# -- checking one run's events (no I/O) -------------------------------------------


class RunCheck:
    """One run's events, checked as they arrive: seq, marker, ``i``, and one ``end`` last."""

    def __init__(self, session: int, marker: str, count: int, tally: Tally) -> None:
        self.session, self.marker, self.count, self.tally = session, marker, count, tally
        self.run_id: str | None = None
        self.session_id: str | None = None  # as the run's creation answered
        self.seq = 0  # the last seq received: where a reconnect resumes
        self.end: dict[str, Any] | None = None
        self._ticks = 0
        self._next_i = 0
        self._gaps = 0
        self._after_gap = False  # the tick that follows a gap cannot be judged for order

    @property
    def ended(self) -> bool:
        return self.end is not None

    def violate(self, kind: str, detail: str) -> None:
        self.tally.violate(kind, self.session, self.run_id, detail)

    def frame(self, frame: SSEFrame, received: float) -> None:
        event = decode_event(frame)
        if event is None or frame.id != str(event["seq"]) or not isinstance(event.get("type"), str):
            self.violate("bad_frame", f"id {frame.id!r}, event {frame.event!r}: {frame.data[:120]}")
            return
        self.observe(event, received)

    def observe(self, event: dict[str, Any], received: float) -> None:
        seq, kind = int(event["seq"]), str(event["type"])
        if self.end is not None:
            self.violate("event_after_end", f"seq {seq} ({kind}) after the end at seq {self.seq}")
            return
        if seq <= self.seq:
            self.violate("duplicate", f"seq {seq} ({kind}) after seq {self.seq}")
            return
        if seq > self.seq + 1:
            missing = f"{self.seq + 1}" if seq == self.seq + 2 else f"{self.seq + 1}..{seq - 1}"
            self.violate("gap", f"seq {missing} missing")
            self._gaps += 1
            self._after_gap = True
        self.seq = seq
        self.tally.events += 1
        if kind == "tick":
            self._tick(event.get("data"), received)
        elif kind == "end":
            self._end(event.get("data"))

    def _tick(self, data: Any, received: float) -> None:
        marker = _field(data, "marker")
        if marker != self.marker:  # someone else's tick: its i says nothing about ours
            self.violate("foreign_marker", f"seq {self.seq} carries marker {marker!r}, not {self.marker!r}")
            return
        self._ticks += 1
        self.tally.ticks += 1
        i = _field(data, "i")
        if i != self._next_i and not self._after_gap:  # a gap was reported already
            self.violate("tick_order", f"seq {self.seq} is tick {i!r}, tick {self._next_i} was due")
        self._after_gap = False
        self._next_i = i + 1 if isinstance(i, int) else self._next_i + 1
        sent = _field(data, "t")
        if isinstance(sent, int | float):
            self.tally.tick_ms.append((received - sent) * 1000.0)

    def _end(self, data: Any) -> None:
        self.end = data if isinstance(data, dict) else {}
        status = self.end.get("status")
        if status != "succeeded":
            self.violate("run_failed", f"ended {status}: {compact(self.end.get('error'))}")
            return
        self.tally.succeeded += 1
        if self._ticks != self.count and not self._gaps:
            self.violate("tick_count", f"{self._ticks} ticks of {self.count}")

    def verify(self, snapshot: dict[str, Any]) -> None:
        """The run's snapshot, read after ``end``, must tell the stream's story."""
        assert self.end is not None
        expected = {"status": self.end.get("status"), "last_seq": self.seq, "session_id": self.session_id}
        if self.end.get("status") == "succeeded":
            expected["output"] = {"marker": self.marker, "count": self.count}
        wrong = [
            f"{key} {snapshot.get(key)!r}, not {want!r}" for key, want in expected.items() if snapshot.get(key) != want
        ]
        if wrong:
            self.violate("snapshot_mismatch", "; ".join(wrong))


# -- one simulated user ------------------------------------------------------------


class _Abort(Exception):
    """A violation after which this run cannot be checked further."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.detail = kind, detail


class _Dropped(Exception):
    """A stream that failed in a way worth reconnecting for (a 5xx answer)."""


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _run_path(run_id: str, *rest: str) -> str:
    return "/".join(["/v1/runs", quote(run_id, safe=""), *rest])


class _Session:
    """One user: its own owner and marker, its runs one after another in one session."""

    def __init__(self, index: int, config: Config, http: httpx.AsyncClient, tally: Tally) -> None:
        self.index, self.config, self.http, self.tally = index, config, http, tally
        self.marker = f"{config.prefix}-s{index}"
        self.session_id: str | None = None
        self.current: RunCheck | None = None
        self._created = 0

    async def run(self, stop_at: float | None) -> None:
        while await self._one_run():
            if stop_at is None or time.monotonic() >= stop_at:
                return

    def timed_out(self, deadline_s: float) -> None:
        if self.current is not None and not self.current.ended:
            self.current.violate("timeout", f"no end event within {deadline_s:g} s (last seq {self.current.seq})")

    async def _one_run(self) -> bool:
        """Create, follow and verify one run; False when this session cannot go on."""
        check = self.current = RunCheck(self.index, self.marker, self.config.events, self.tally)
        try:
            await self._create(check)
            await self._follow(check)
            assert check.run_id is not None
            check.verify(await self._call("GET", _run_path(check.run_id)))
        except _Abort as exc:
            check.violate(exc.kind, exc.detail)
            return False
        return True

    async def _create(self, check: RunCheck) -> None:
        run_input = {"marker": self.marker, "count": self.config.events, "interval_ms": self.config.interval_ms}
        body: dict[str, Any] = {"pipeline": PIPELINE, "input": run_input}
        if self.session_id is not None:
            body["session_id"] = self.session_id
        # A create retried after a dropped connection must not make a second run.
        key, self._created = f"{self.marker}-{self._created}", self._created + 1
        began = time.perf_counter()
        snapshot = await self._call("POST", "/v1/runs", body, {"Idempotency-Key": key})
        self.tally.create_ms.append((time.perf_counter() - began) * 1000.0)
        self.tally.runs += 1
        check.run_id, check.session_id = _text(snapshot, "run_id"), _text(snapshot, "session_id")
        if self.session_id is None:
            self.session_id = check.session_id
        elif check.session_id != self.session_id:
            check.violate("session_mismatch", f"created in session {check.session_id}, not {self.session_id}")

    async def _call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        what = f"{method} {path}"
        for attempt in range(REQUEST_RETRIES + 1):
            try:
                response = await self.http.request(method, path, json=body, headers=headers)
                break
            except httpx.TransportError as exc:
                if attempt == REQUEST_RETRIES:
                    raise _Abort("transport_error", f"{what}: {_describe(exc)}") from exc
                self.tally.retries += 1
                await asyncio.sleep(0.05 * (attempt + 1))
        if response.is_error:
            raise _Abort("http_error", f"{what}: {api_error(response)}")
        try:
            value = response.json()
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise _Abort("bad_response", f"{what}: not a JSON object: {response.text[:120]!r}")
        return value

    async def _follow(self, check: RunCheck) -> None:
        """Read the stream to its end, reconnecting after the last seq seen when it drops."""
        failures = 0
        while True:
            before = check.seq
            try:
                await self._read(check)
                if check.ended:
                    return
                problem = "the server closed the stream before its end event"
            except (httpx.TransportError, _Dropped) as exc:
                if check.ended:  # dropped after the end: nothing was lost
                    return
                problem = _describe(exc)
            failures = 1 if check.seq > before else failures + 1
            if failures > RECONNECTS:
                raise _Abort("stream_lost", f"no end event after seq {check.seq}: {problem}")
            self.tally.reconnects += 1
            await asyncio.sleep(min(1.0, 0.05 * 2 ** (failures - 1)))

    async def _read(self, check: RunCheck) -> None:
        assert check.run_id is not None
        path = _run_path(check.run_id, "stream")
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(check.seq)}
        async with self.http.stream("GET", path, headers=headers) as response:
            if response.is_error:
                await response.aread()
                error = api_error(response)
                if error.status >= 500:
                    raise _Dropped(str(error))
                raise _Abort("http_error", f"GET {path}: {error}")
            parser = SSEParser()
            try:
                # No deadline until the end event; then the server has END_GRACE_S to close.
                async with asyncio.timeout(None) as grace:
                    async for line in response.aiter_lines():
                        frame = parser.feed(line)
                        if frame is None:
                            continue
                        check.frame(frame, time.time())
                        if check.ended and grace.when() is None:
                            grace.reschedule(asyncio.get_running_loop().time() + END_GRACE_S)
            except TimeoutError:
                check.violate("open_after_end", f"still open {END_GRACE_S:g} s after the end event")


def _text(snapshot: dict[str, Any], key: str) -> str:
    value = snapshot.get(key)
    if not isinstance(value, str):
        raise _Abort("bad_response", f"a run snapshot without a {key}: {compact(snapshot)[:120]}")
    return value


# -- the whole test ------------------------------------------------------------------


async def run(config: Config) -> dict[str, Any]:
    """Run the load test; its report, the ``--json`` document."""
    _allow_open_files(config.sessions)
    tally = Tally()
    # Built once: httpx would load the CA certificates again for every client.
    tls = ssl.create_default_context()
    async with contextlib.AsyncExitStack() as clients:
        sessions = []
        for i in range(config.sessions):
            http = await clients.enter_async_context(_http_client(config, i, tls))
            sessions.append(_Session(i, config, http, tally))
        await _preflight(sessions[0].http, config)
        began = time.monotonic()
        stop_at = None if config.duration_s is None else began + config.duration_s
        tasks = [asyncio.create_task(session.run(stop_at)) for session in sessions]
        _, pending = await asyncio.wait(tasks, timeout=config.deadline_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        elapsed = time.monotonic() - began
        for session, task in zip(sessions, tasks, strict=True):
            if task in pending:
                session.timed_out(config.deadline_s)
            else:
                task.result()  # a bug of this module should show, not hide among the violations
    return report(config, tally, elapsed)


def _http_client(config: Config, session: int, tls: ssl.SSLContext) -> httpx.AsyncClient:
    """A session's own client, as a real user has: one pool shared by hundreds of streams
    costs more CPU than the streams, since httpx scans the whole pool on every request."""
    headers = {"User-Agent": "runyard-loadtest"}
    if owner := config.owner(session):
        headers["X-Client-Id"] = owner
    if config.token:
        headers["Authorization"] = f"Bearer {config.token}"
    # Idle connections are dropped before uvicorn's 5 s keep-alive ends, so that a request
    # is not sent on a connection the server is closing.
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=2, keepalive_expiry=3.0)
    # The read timeout outlasts the server's 15 s heartbeat, so quiet streams live on.
    timeout = httpx.Timeout(60.0, connect=10.0)
    return httpx.AsyncClient(base_url=config.url, headers=headers, limits=limits, timeout=timeout, verify=tls)


async def _preflight(http: httpx.AsyncClient, config: Config) -> None:
    """A server that cannot take the test fails it once, as a usage error, not N times."""
    response = await http.get("/v1/pipelines")
    if response.is_error:
        raise api_error(response)
    listed = _field(response.json(), "pipelines")
    names = {_field(item, "name") for item in listed} if isinstance(listed, list) else set()
    if PIPELINE not in names:
        message = f"the server at {config.url} has no {PIPELINE} pipeline (runyard demo serves one)"
        raise APIError(404, "pipeline_not_found", message)


def _allow_open_files(sessions: int) -> None:
    """Each session holds a socket, and the usual soft limit of 1,024 files would cap N below that."""
    try:
        import resource
    except ImportError:  # not POSIX: nothing to raise
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = sessions + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        allowed = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (allowed, hard))


# -- the report ----------------------------------------------------------------------


def percentiles(values: list[float]) -> dict[str, Any]:
    """Nearest-rank p50, p90, p99 and the maximum, in the values' unit, rounded to 0.01."""
    ordered = sorted(values)
    result: dict[str, Any] = {"count": len(ordered)}
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)):
        rank = max(1, math.ceil(q * len(ordered)))
        result[name] = round(ordered[rank - 1], 2) if ordered else None
    return result


def report(config: Config, tally: Tally, elapsed: float) -> dict[str, Any]:
    def per_s(count: int) -> float | None:
        return round(count / elapsed, 1) if elapsed > 0 else None

    return {
        "ok": not tally.by_kind,
        "config": {
            "url": config.url,
            "sessions": config.sessions,
            "events": config.events,
            "interval_ms": config.interval_ms,
            "duration_s": config.duration_s,
            "timeout_s": config.deadline_s,
            "owners": "shared" if config.shared_owner else "one per session",
            "prefix": config.prefix,
        },
        "totals": {
            "runs": tally.runs,
            "runs_succeeded": tally.succeeded,
            "events": tally.events,
            "ticks": tally.ticks,
            "reconnects": tally.reconnects,
            "retries": tally.retries,
            "elapsed_s": round(elapsed, 3),
            "runs_per_s": per_s(tally.runs),
            "events_per_s": per_s(tally.events),
            "ticks_per_s": per_s(tally.ticks),
        },
        "latency_ms": {"create": percentiles(tally.create_ms), "tick": percentiles(tally.tick_ms)},
        "latency_note": CLOCK_NOTE,
        "violations_total": sum(tally.by_kind.values()),
        "violations_by_kind": {kind: tally.by_kind[kind] for kind in KINDS},
        "violations": [asdict(violation) for violation in tally.violations],
    }


def show(report: dict[str, Any], console: Console) -> None:
    """The report as tables, for a person."""
    config, totals = report["config"], report["totals"]
    runs = "one run each" if config["duration_s"] is None else f"new runs for {config['duration_s']:g} s"
    console.print(Text(f"runyard loadtest → {config['url']}", style="bold"))
    shape = f"{config['sessions']} sessions x {config['events']} ticks every {config['interval_ms']} ms"
    console.print(Text(f"{shape} · {runs} · owners: {config['owners']}"))
    console.print(_totals_table(totals))
    console.print(_latency_table(report["latency_ms"]))
    console.print(Text(report["latency_note"], style="dim"))
    if report["ok"]:
        console.print(Text("✓ no violations", style="bold green"))
        return
    console.print(_violations_table(report))
    console.print(Text(f"✗ {report['violations_total']} violations", style="bold red"))


def _totals_table(totals: dict[str, Any]) -> Table:
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_column(justify="right")
    table.add_row("runs", f"{totals['runs']:,} ({totals['runs_succeeded']:,} succeeded)", _rate(totals["runs_per_s"]))
    table.add_row("events", f"{totals['events']:,}", _rate(totals["events_per_s"]))
    table.add_row("ticks", f"{totals['ticks']:,}", _rate(totals["ticks_per_s"]))
    table.add_row("reconnects", f"{totals['reconnects']:,}", f"retries {totals['retries']:,}")
    table.add_row("elapsed", f"{totals['elapsed_s']:.2f} s", "")
    return table


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:,.1f}/s"


def _latency_table(latency: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="latency (ms)", title_justify="left")
    table.add_column("")
    for name in ("p50", "p90", "p99", "max", "count"):
        table.add_column(name, justify="right")
    for name, label in (("create", "create (POST /v1/runs)"), ("tick", "tick (sent → received)")):
        row = latency[name]
        cells = ["-" if row[key] is None else f"{row[key]:.2f}" for key in ("p50", "p90", "p99", "max")]
        table.add_row(label, *cells, f"{row['count']:,}")
    return table


def _violations_table(report: dict[str, Any]) -> Table:
    table = Table(title="violations", title_justify="left", title_style="bold red")
    table.add_column("kind", style="red")
    table.add_column("count", justify="right")
    table.add_column("first seen")
    for kind, count in report["violations_by_kind"].items():
        if count:
            first = next((v for v in report["violations"] if v["kind"] == kind), None)
            where = "" if first is None else _where(first)
            table.add_row(kind, f"{count:,}", where)
    return table


def _where(violation: dict[str, Any]) -> str:
    run = f", {violation['run_id']}" if violation["run_id"] else ""
    return f"session {violation['session']}{run}: {violation['detail']}"
