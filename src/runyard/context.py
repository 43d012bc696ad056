"""What a pipeline sees of its run: ``RunContext`` and ``current_run()``.

A context belongs to exactly one run and is reachable only from that run's task
(a contextvar), so tools deep in a call stack reach their own run without any
shared holder that could hand user A's events to user B.
"""

from __future__ import annotations

import contextvars
import copy
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from runyard.journal import RunJournal
from runyard.longterm import LongTerm
from runyard.models import EVENT_TYPE, Fence, Message, now
from runyard.servable import check_depth
from runyard.session_ids import public_session_id
from runyard.store.journal import Replay

if TYPE_CHECKING:
    from runyard.events.log import EventLog
    from runyard.governance.limit import LimitRegistry
    from runyard.models import Run
    from runyard.resources import Resources
    from runyard.store.base import SessionStore, WorkerStore

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
_current: contextvars.ContextVar[RunContext] = contextvars.ContextVar("runyard_run")
_VALID_TYPES: set[str] = set()  # event types already checked against EVENT_TYPE
# The runtime's own event types: a pipeline emitting one could end every stream
# of its run (streams close at ``end``) or forge its status while it goes on.
RESERVED_TYPES = frozenset({"status", "end", "error", "step", "input.requested", "input.received"})


def current_run() -> RunContext:
    """The ``RunContext`` of the run executing this code; ``LookupError`` outside a run."""
    try:
        return _current.get()
    except LookupError:
        raise LookupError("current_run() called outside of a runyard run") from None


class Memory:
    """The session's conversation history, shared by the session's runs (which
    execute one at a time unless a caller asked otherwise) and by nobody else."""

    def __init__(self, store: SessionStore, session_id: str, keep: int) -> None:
        self._store = store
        self._session_id = session_id
        self._keep = keep

    async def history(self) -> list[dict[str, Any]]:
        """Messages oldest first, each ``{"role", "content", "ts", **extra}``."""
        return [message.to_dict() for message in await self._store.history(self._session_id)]

    async def append(self, role: str, content: Any, **extra: Any) -> None:
        """Add a message; only the newest ``RUNYARD_HISTORY_MAX`` are kept."""
        check_depth(content, "a memory message's content")
        check_depth(extra, "a memory message's fields")
        message = Message(role=role, content=content, ts=now(), extra=extra)
        await self._store.append_message(self._session_id, message, self._keep)


class RunSession:
    """The run's session: its id, and its metadata read from the store the first
    time a pipeline asks (most pipelines never do: they pay no store read).
    A session's metadata is fixed when the session is created, so a late read
    sees what was stored when the run started."""

    def __init__(self, store: SessionStore, key: str) -> None:
        self.id = public_session_id(key)
        self.key = key  # unique across owners (``runyard.session_ids``): what the store knows it by
        self._store = store
        self._metadata: Mapping[str, Any] | None = None

    async def metadata(self) -> Mapping[str, Any]:
        """The session's metadata, read-only (``{}`` when it was created without)."""
        if self._metadata is None:
            session = await self._store.get_session(self.key)
            stored = copy.deepcopy(session.metadata) if session is not None else {}  # the run's own copy
            self._metadata = MappingProxyType(stored)
        return self._metadata

    def __repr__(self) -> str:
        return f"<RunSession {self.id}>"


class RunContext:
    """A run's handle on the runtime: events, durable steps, questions and
    sleeps, memory, the owner's long-term store, limits, its session and the app's shared resources.

    ``journal``: this execution's replay of the run (``runyard.journal``); a
    context built without one starts the run's journal empty."""

    def __init__(
        self,
        run: Run,
        log: EventLog,
        store: WorkerStore,
        limits: LimitRegistry,
        history_max: int,
        fence: Fence | None = None,
        *,
        resources: Resources,
        journal: RunJournal | None = None,
        longterm: LongTerm | None = None,
    ) -> None:
        self.run_id = run.run_id
        self.session_id = public_session_id(run.session_id)  # as its owner knows it
        self.owner = run.owner
        self.pipeline = run.pipeline
        self.attempt = run.attempt
        self.trace_id = run.trace_id  # its OpenTelemetry trace: on every log line of the run
        self.metadata = run.metadata
        self.memory = Memory(store, run.session_id, history_max)
        self.session = RunSession(store, run.session_id)
        self.resources = resources  # the app's, built at start-up: shared by every run, read-only
        self.store = (longterm or LongTerm(store)).of(run.owner)  # the owner's long-term store
        self._limits = limits
        self._journal = journal or RunJournal(run, log, Replay(), fence, now())

    async def emit(self, type: str, data: Any = None) -> None:
        """Add an event to this run's log. It is published once persisted, in
        order; the run's ``end`` comes after every event it emitted.
        ``ValueError`` for a malformed type or one of the runtime's own
        (``RESERVED_TYPES``)."""
        if type not in _VALID_TYPES:
            if not EVENT_TYPE.fullmatch(type):
                raise ValueError(f"event type {type!r} must match {EVENT_TYPE.pattern}")
            if type in RESERVED_TYPES:
                raise ValueError(
                    f"event type {type!r} is the runtime's own; pipelines may not emit"
                    f" {', '.join(sorted(RESERVED_TYPES))}"
                )
            if len(_VALID_TYPES) < 10_000:  # the types a deployment uses are few; don't grow without bound
                _VALID_TYPES.add(type)
        check_depth(data, f"the data of event {type!r}")
        await self._journal.emit(type, data)

    async def phase(self, name: str, status: str = "started", **extra: Any) -> None:
        """A ``phase`` event ``{"name", "status", **extra}``."""
        await self.emit("phase", {"name": name, "status": status, **extra})

    async def token(self, text: str) -> None:
        """A ``token`` event ``{"text"}``: a piece of streamed output."""
        await self._journal.emit("token", {"text": text})

    async def progress(self, current: float, total: float | None = None, message: str | None = None) -> None:
        """A ``progress`` event ``{"current", "total", "fraction", "message"}``."""
        fraction = min(1.0, current / total) if total else None
        data = {"current": current, "total": total, "fraction": fraction, "message": message}
        await self._journal.emit("progress", data)

    # -- durable work ------------------------------------------------------------

    async def step(self, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` (awaited if async, in a thread if sync), its result
        recorded durably with a ``step`` event: when the run executes again, the
        step returns the recorded result without calling ``fn``. Steps are
        identified by ``(name, n)``, ``n`` counting this name's steps from 1. The
        value returned is the recorded JSON (a pydantic model comes back dumped);
        a result that is not JSON fails the run (``pipeline_error``) naming the step."""
        return await self._journal.step(name, fn, args, kwargs)

    async def ask(
        self,
        request: Any,
        *,
        schema: type[M] | dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """Ask for input and wait for it without holding a worker: the run becomes
        ``waiting`` (``waiting_for`` in its snapshot, an ``input.requested`` event)
        until ``POST /v1/runs/{id}/input`` answers, then executes again from its
        start and this returns the answer (an instance of ``schema`` when it is a
        pydantic model; checked against it when it is a JSON Schema dict).
        Unanswered after ``timeout_s``, the run ends ``timed_out``."""
        return await self._journal.ask(request, schema, timeout_s)

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` without holding a worker (status ``waiting``); the run
        executes again after that time, on any worker, across restarts."""
        await self._journal.sleep(seconds)

    @asynccontextmanager
    async def limit(self, name: str, tokens: int = 0) -> AsyncIterator[None]:
        """Hold one admission to the limit ``name`` (declared with ``app.limit``),
        waiting fairly for it; ``BreakerOpen`` at once while its breaker is open."""
        async with self._limits.get(name).acquire(self, tokens=tokens):
            yield

    async def call(
        self, name: str, fn: Callable[..., Awaitable[T]], *args: Any, retries: int = 3, tokens: int = 0, **kwargs: Any
    ) -> T:
        """``await fn(*args, **kwargs)`` under the limit ``name``, retried with
        backoff and jitter (honouring ``Retry-After``) on 429, 5xx and transport
        errors; never on cancellation, which stops it at once."""
        return await self._limits.get(name).call(self, fn, args, kwargs, retries, tokens)

    def _activate(self) -> contextvars.Token[RunContext]:
        return _current.set(self)

    def _deactivate(self, token: contextvars.Token[RunContext]) -> None:
        _current.reset(token)

    def __repr__(self) -> str:
        return f"<RunContext {self.pipeline} run={self.run_id} session={self.session_id}>"
