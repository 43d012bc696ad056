"""The runtime's data: runs, sessions, events. Plain values, no I/O.

Times are unix seconds (floats) inside runyard and RFC 3339 UTC strings on the
wire. An event keeps its ``data`` as encoded JSON bytes from the moment it is
appended: it is serialised once, stored as is and framed for SSE without ever
being parsed again.
"""

from __future__ import annotations

import functools
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

import orjson

from runyard.session_ids import public_session_id
from runyard.trace_context import new_trace


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"  # for an answer (``ctx.ask``) or a time (``ctx.sleep``): unfinished, holding no worker
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def finished(self) -> bool:
        return self not in UNFINISHED


UNFINISHED = frozenset({RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING})


class Multitask(StrEnum):
    ENQUEUE = "enqueue"
    REJECT = "reject"
    INTERRUPT = "interrupt"


IDEMPOTENCY_TTL_S = 24 * 3600  # how long an Idempotency-Key is remembered
MAX_AFTER_S = 31_536_000  # a run's ``after_s`` (a year) at most

EVENT_TYPE = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def new_id(prefix: str) -> str:
    """A random, URL-safe id such as ``run_3f9c...`` (96 random bits, not ordered by time)."""
    return f"{prefix}_{secrets.token_hex(12)}"


def now() -> float:
    return time.time()


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return _rfc3339(ts)


@functools.lru_cache(maxsize=64)
def _whole_second(second: int) -> bytes:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S").encode()


def _rfc3339(ts: float) -> str:
    # Every event's time is formatted once per reader; the date part changes once
    # a second, so only the microseconds are formatted each time.
    second = int(ts)
    return f"{_whole_second(second).decode()}.{int((ts - second) * 1e6):06d}Z"


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


@dataclass(slots=True)
class RunError:
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


ASK = "ask"
SLEEP = "sleep"


@dataclass(frozen=True, slots=True)
class Wait:
    """What a ``waiting`` run waits for: an answer to ``ctx.ask`` (``kind`` "ask")
    or the end of ``ctx.sleep`` ("sleep").

    ``step``/``n`` name the step that records the answer (or the sleep), ``pos``
    is the pipeline's replay position at the wait (``runyard.journal``), and
    ``until`` is when the sleep ends or the question times out (None: never)."""

    kind: str
    id: str
    n: int
    pos: int
    request: Any = None
    schema: dict[str, Any] | None = None
    until: float | None = None

    @property
    def step(self) -> str:
        """The name of the step that records this wait: ``:ask`` or ``:sleep``
        (user steps cannot start with ``:``)."""
        return f":{self.kind}"

    def public(self) -> dict[str, Any]:
        """The snapshot's ``waiting_for``."""
        if self.kind == ASK:
            return {"ask_id": self.id, "request": self.request, "schema": self.schema}
        return {"until": rfc3339(self.until)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.id,
            "n": self.n,
            "pos": self.pos,
            "request": self.request,
            "schema": self.schema,
            "until": self.until,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Wait:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class StepRecord:
    """A step's recorded result: ``(name, n)`` identifies it within its run,
    ``result`` is its JSON (encoded once), ``pos`` the replay position right
    after it (where an execution that replays the step goes on counting)."""

    name: str
    n: int
    result: bytes
    pos: int
    at: float

    def value(self) -> Any:
        return orjson.loads(self.result)


@dataclass(slots=True)
class Run:
    run_id: str
    session_id: str
    owner: str
    pipeline: str
    status: RunStatus
    input: Any
    created_at: float
    output: Any = None
    error: RunError | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    started_at: float | None = None
    finished_at: float | None = None
    last_seq: int = 0
    attempt: int = 1
    timeout_s: float | None = None
    max_attempts: int = 1
    worker_id: str | None = None
    lease_expires_at: float | None = None
    waiting: Wait | None = None
    executed_s: float = 0.0  # time spent executing, over every execution: what ``timeout_s`` counts
    scheduled_for: float | None = None  # ``after_s``: no worker claims the run before this time
    webhook: str | None = None  # where its final snapshot is POSTed once it finishes (``runyard.webhooks``)
    # its W3C trace context (``runyard.trace_context``); None: stored before runs had traces
    trace: str | None = field(default_factory=new_trace)

    @property
    def trace_id(self) -> str | None:
        return self.trace[3:35] if self.trace else None

    def due(self, at: float) -> bool:
        """Whether a worker may claim it at ``at`` (one created with ``after_s`` only from its time)."""
        return self.scheduled_for is None or self.scheduled_for <= at

    def snapshot(self) -> dict[str, Any]:
        """The contract's run snapshot."""
        return {
            "run_id": self.run_id,
            "session_id": public_session_id(self.session_id),
            "pipeline": self.pipeline,
            "status": self.status.value,
            "input": self.input,
            "output": self.output,
            "error": self.error.to_dict() if self.error else None,
            "created_at": rfc3339(self.created_at),
            "started_at": rfc3339(self.started_at),
            "finished_at": rfc3339(self.finished_at),
            "last_seq": self.last_seq,
            "attempt": self.attempt,
            "metadata": self.metadata,
            "waiting_for": self.waiting.public() if self.waiting is not None else None,
            "scheduled_for": rfc3339(self.scheduled_for),
            "trace_id": self.trace_id,
        }


@dataclass(slots=True)
class Session:
    session_id: str
    owner: str
    created_at: float
    last_activity: float
    metadata: dict[str, Any] = field(default_factory=dict)
    deleted: bool = False

    def expired(self, ttl_s: float, at: float) -> bool:
        return at - self.last_activity > ttl_s


@dataclass(slots=True)
class Message:
    """One entry of a session's memory."""

    role: str
    content: Any
    ts: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, "role": self.role, "content": self.content, "ts": rfc3339(self.ts)}


@dataclass(slots=True)
class RunUpdate:
    """A change to a run's row, written in the same transaction as the events it
    travels with, so a status change and its ``status`` event are never apart.

    ``expect`` makes the update conditional on the run's current status; when it
    does not hold, the whole group (its events and update) is refused with
    ``StatusConflict``; other groups of the same append are unaffected.
    Fields left ``None`` are not changed; ``clear_lease`` empties worker and lease.
    ``lease_expired_by`` makes it conditional, too, on the run's lease having
    ended before that time (recovering another worker's run, never a live one);
    ``expect_wait`` on the run waiting for the wait of that id (an answer to
    that question, the end of that sleep). ``waiting`` sets what the run waits
    for, ``clear_waiting`` empties it.
    """

    status: RunStatus | None = None
    expect: frozenset[RunStatus] | None = None
    output: Any = None
    set_output: bool = False
    error: RunError | None = None
    started_at: float | None = None
    finished_at: float | None = None
    attempt: int | None = None
    worker_id: str | None = None
    lease_expires_at: float | None = None
    clear_lease: bool = False
    lease_expired_by: float | None = None
    waiting: Wait | None = None
    clear_waiting: bool = False
    expect_wait: str | None = None
    executed_s: float | None = None


@dataclass(slots=True)
class EventDraft:
    """An event not yet persisted: it gets its ``seq`` from the store.

    ``pos``: for an event a pipeline emitted, its replay position + 1 (the
    position the run's log has reached once it is stored); a step's
    ``restarted`` marker carries the position it starts again from. The last
    ``pos`` in a run's log is where a new execution starts appending again
    (``runyard.journal``); the runtime's other events carry none."""

    run_id: str
    type: str
    data: bytes
    ts: float
    pos: int | None = None


@dataclass(slots=True)
class Event:
    run_id: str
    seq: int
    type: str
    data: bytes
    ts: float
    # The run's session stream (``session_channel``), set by the append that numbered
    # it so that publishing reaches the session's followers; stores' reads leave
    # it None, and it takes no part in equality.
    session: str | None = field(default=None, compare=False)

    def to_json(self) -> bytes:
        """The event exactly as ``/events`` and SSE ``data:`` lines carry it."""
        # _rfc3339's format, written straight into the bytes: half the cost of
        # formatting a str and encoding it (1.98 against 3.75 µs an event, timeit)
        ts, second = self.ts, int(self.ts)
        micros = int((ts - second) * 1e6)
        data = (self.seq, self.type.encode(), self.data, _whole_second(second), micros)
        return b'{"seq":%d,"type":"%s","data":%s,"ts":"%s.%06dZ"}' % data


class SessionEvent(NamedTuple):
    """An event of a session's stream with its cursor there (``read_session_events``)."""

    cursor: int
    event: Event


SESSION_PREFIX = "session\x1f"


def session_channel(owner: str, session_id: str) -> str:
    """A session's stream, as the hub and brokers name it: by owner and id, since
    session ids are scoped per owner. Never a run id (those hold no ``\\x1f``)."""
    return f"{SESSION_PREFIX}{owner}\x1f{session_id}"


class Fence(NamedTuple):
    """Who may write a running run's events: the worker holding its lease, in
    the attempt it claimed. Once the run is handed back (its lease expired, or
    another worker recovered it), a fenced write is refused with ``LeaseLost``,
    so a worker that stalled past its lease can never write next to the run's
    new holder."""

    worker_id: str
    attempt: int


class StatusConflict(Exception):
    """A conditional ``RunUpdate`` found the run in another status (or gone)."""

    def __init__(self, run_id: str, actual: RunStatus | None) -> None:
        super().__init__(f"run {run_id} is {actual}")
        self.run_id = run_id
        self.actual = actual


class LeaseLost(StatusConflict):
    """A fenced write found the run no longer held by that worker and attempt."""


@dataclass(slots=True)
class Cron:
    """A schedule that creates a run of ``pipeline`` on ``input`` at each time its
    5-field cron ``schedule`` names in ``timezone`` (``runyard.crons``).

    ``next_run_at`` is the next due time (None while disabled): a scheduler
    creates that time's run and moves it on in one transaction, so each due
    time makes one run whichever worker gets there first."""

    cron_id: str
    owner: str
    pipeline: str
    input: Any
    schedule: str
    timezone: str
    created_at: float
    updated_at: float
    next_run_at: float | None
    enabled: bool = True
    session_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    webhook: Any = None
    last_run_id: str | None = None
    last_run_at: float | None = None

    def snapshot(self) -> dict[str, Any]:
        """The contract's cron."""
        return {
            "cron_id": self.cron_id,
            "pipeline": self.pipeline,
            "input": self.input,
            "schedule": self.schedule,
            "timezone": self.timezone,
            "session_id": None if self.session_id is None else public_session_id(self.session_id),
            "metadata": self.metadata,
            "webhook": self.webhook,
            "enabled": self.enabled,
            "next_run_at": rfc3339(self.next_run_at),
            "last_run_id": self.last_run_id,
            "last_run_at": rfc3339(self.last_run_at),
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        }
