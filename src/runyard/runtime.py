"""A started app: store, broker, hub, event log and engine, and the operations
the HTTP layer (or any other front end) performs on them on behalf of an owner.

Ownership is enforced here, once: another owner's run or session is reported
exactly as a missing one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import orjson

from runyard.broker import broker_from_url
from runyard.broker.base import CANCEL
from runyard.crons import Crons
from runyard.engine import Engine
from runyard.engine.engine import WORKER_LIVE_LEASES
from runyard.errors import (
    AskMismatch,
    InvalidAnswer,
    InvalidCursor,
    PipelineNotFound,
    RunFinished,
    RunNotFound,
    RunNotWaiting,
    SessionNotFound,
)
from runyard.events import Hub, follow
from runyard.events.session_stream import follow_session
from runyard.events.sse import Frame
from runyard.events.stream import Joined, Write, join_first
from runyard.governance import LimitRegistry
from runyard.governance.admission import CreationRate
from runyard.longterm import LongTerm
from runyard.models import (
    ASK,
    ID_PATTERN,
    IDEMPOTENCY_TTL_S,
    Multitask,
    Run,
    RunStatus,
    RunUpdate,
    Session,
    StatusConflict,
    StepRecord,
    Wait,
    dumps,
    new_id,
    now,
    session_channel,
)
from runyard.observability import metrics, otel_setup
from runyard.observability.logs import log_run
from runyard.pipeline import Pipeline
from runyard.ranking import Embed
from runyard.resources import Resources
from runyard.servable import NestedTooDeep, check_depth
from runyard.session_ids import session_key
from runyard.sessions import IfExists, Sessions
from runyard.settings import Settings
from runyard.store import store_from_url
from runyard.store.base import Admission, Cancelled, RunQuery, SessionEntry
from runyard.trace_context import new_trace
from runyard.validation import schema_errors
from runyard.webhooks.outbox import Webhooks

log = logging.getLogger("runyard.runtime")


@dataclass(frozen=True, slots=True)
class Idempotency:
    """An ``Idempotency-Key`` and the fingerprint of the request that carried it."""

    key: str
    fingerprint: str

    @classmethod
    def of(cls, key: str, request: Any) -> Idempotency:
        """``request``'s fingerprint: a hash of its JSON, keys sorted."""
        canonical = orjson.dumps(request, option=orjson.OPT_SORT_KEYS)
        return cls(key, hashlib.sha256(canonical).hexdigest())


class Runtime:
    """``async with app.running() as runtime:`` — everything a served app needs.

    Built with what the app declared (``pipelines``, ``limits``) and the
    ``resources`` it built at start-up, which every run reads."""

    def __init__(
        self,
        settings: Settings,
        pipelines: Mapping[str, Pipeline],
        limits: LimitRegistry,
        resources: Resources,
        store_embed: Embed | None = None,
    ) -> None:
        self.settings = settings
        self.pipelines = pipelines
        self.limits = limits
        self.resources = resources
        self.store = store_from_url(settings.store, max_run_bytes=settings.max_run_bytes, lease_s=settings.lease_s)
        self.broker = broker_from_url(settings.broker)
        self.hub = Hub(self.broker.watcher)
        self.longterm = LongTerm(self.store, store_embed)  # /v1/store and ctx.store
        self.engine = Engine(settings, pipelines, limits, resources, self.store, self.broker, self.longterm)
        self.events = self.engine.events
        self.webhooks = Webhooks(settings, self.store)  # delivers the outbox on workers
        self.crons = Crons(settings, pipelines, self.store, self.broker, check_webhook=self.webhooks.check)
        self.sessions = Sessions(self.store, settings, self._announce)
        self._creation_rate = CreationRate(settings.rate_limit, settings.broker) if settings.rate_limit else None

    async def __aenter__(self) -> Runtime:
        otel_setup.start()  # exports spans when OTEL_EXPORTER_OTLP_ENDPOINT says where
        await self.store.open()
        await self.broker.open(self.hub, self.engine.on_signal)
        await self.limits.open(self.settings.broker, lease_s=self.settings.limit_lease_s)  # redis://: shared
        await self.events.start()
        await self.engine.start()
        await self.crons.start()
        await self.webhooks.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.crons.stop()  # creates no run once the engine drains
        await self.webhooks.stop()
        await self.engine.stop()  # draining runs still reach their resources: they close after this
        await self.limits.close()  # after the drain: no run holds a permit any more
        await self.events.stop()
        await self.broker.close()
        await self.store.close()
        await otel_setup.flush()  # after the drain: the spans of the runs it stopped leave too

    # -- runs ------------------------------------------------------------------

    async def create_run(
        self,
        owner: str,
        pipeline: str,
        input: Any,
        *,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        multitask: Multitask = Multitask.ENQUEUE,
        idempotency: Idempotency | None = None,
        after_s: float | None = None,
        webhook: str | None = None,
        trace: str | None = None,
    ) -> Run:
        """Validate everything, then create the run (and its session) in one step.

        With ``idempotency``, a repeat of the key by the owner within 24 h returns
        the first request's run and creates nothing (``IdempotencyKeyReused`` if
        the request differs); the store settles two requests racing with one key.
        With ``after_s``, no worker claims the run before that many seconds.
        ``trace``: the creating request's trace context (``tracing.incoming``),
        which every execution of the run continues; without it the run starts a
        trace of its own."""
        created = now()
        admission = self._admission(idempotency, created)
        if idempotency is not None and admission is not None:
            seen = await self.store.idempotent_run(owner, idempotency.key, admission.since)
            if seen is not None:
                return admission.repeat_of(*seen)
        spec = self.pipelines.get(pipeline)
        if spec is None:
            raise PipelineNotFound.named(pipeline, self.pipelines)
        stored_input = spec.validate_input(input)
        await self.webhooks.check(webhook)  # before anything is created or counted
        if self._creation_rate is not None:
            await self._creation_rate.admit(owner)  # only requests that would create a run count
        run = Run(
            run_id=new_id("run"),
            session_id=_session_key(owner, session_id) if session_id else new_id("ses"),
            owner=owner,
            pipeline=pipeline,
            status=RunStatus.QUEUED,
            input=stored_input,
            created_at=created,
            metadata=metadata or {},
            timeout_s=_effective_timeout(timeout_s, spec.timeout_s),
            max_attempts=spec.retries + 1,
            scheduled_for=None if after_s is None else created + after_s,
            webhook=webhook,
            trace=trace or new_trace(),
        )
        if session_id is None:
            session = Session(run.session_id, owner, created, created)
            stored = await self.store.create_run(run, session, admission)
        else:
            # the store decides (session live, multitask) in the creation's own
            # transaction: racing requests in any number of processes take turns
            entry = SessionEntry(multitask, expired_before=created - self.settings.session_ttl_s)
            entered = await self.store.enter_session(run, entry, admission)
            await self._announce(entered.cancelled)
            stored = entered.run
        if stored.run_id != run.run_id:
            return stored  # a request with the same idempotency key created it first
        log_run("created", run)
        await self.broker.queued(run.pipeline)  # a worker, here or elsewhere, claims it
        return run

    def _admission(self, idempotency: Idempotency | None, at: float) -> Admission | None:
        quota = self.settings.quota_runs
        if quota is None and idempotency is None:
            return None
        if idempotency is None:
            return Admission(quota=quota)
        return Admission(quota, idempotency.key, idempotency.fingerprint, at - IDEMPOTENCY_TTL_S)

    async def get_run(self, owner: str, run_id: str) -> Run:
        run = await self.store.get_run(run_id) if ID_PATTERN.fullmatch(run_id) else None
        if run is None or run.owner != owner:
            raise RunNotFound.of(run_id)
        return run

    async def join_run(self, owner: str, run_id: str) -> tuple[Run, Joined]:
        """``get_run``, read once the run's channel is joined (``events.stream.join_first``)."""
        return await join_first(self.hub, run_id, lambda: self.get_run(owner, run_id))

    async def list_runs(
        self,
        owner: str | None,
        *,
        session_id: str | None = None,
        status: RunStatus | None = None,
        limit: int = 50,
        before: str | None = None,
        text: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[Run]:
        if before is not None:
            anchor = await self.store.get_run(before)
            if anchor is None or (owner is not None and anchor.owner != owner):
                raise InvalidCursor(f"no run {before!r} to page from")
        statuses = (status,) if status else ()
        if owner is not None and session_id is not None:
            session_id = session_key(owner, session_id) or session_id  # the owner's own session of that id
        return await self.store.list_runs(RunQuery(owner, session_id, statuses, limit, before, text, since, until))

    async def cancel_run(self, owner: str, run_id: str) -> Run:
        run = await self.get_run(owner, run_id)
        if run.status.finished:
            raise RunFinished(f"run {run_id} already ended {run.status.value}")
        await self.engine.cancel(run)
        return await self.get_run(owner, run_id)

    async def answer(self, owner: str, run_id: str, value: Any, ask_id: str | None = None) -> Run:
        """Answer the question the run waits for, and queue it again: its next
        execution replays its steps and ``ctx.ask`` returns ``value``.

        ``RunNotWaiting`` unless it waits for an answer, ``AskMismatch`` when
        ``ask_id`` names another question, ``InvalidAnswer`` when ``value`` does not
        fit the question's schema (then nothing changes). The answer is recorded,
        with its ``input.received`` event, only if the run still waits for that
        question when the store writes it: of two racing answers, one wins."""
        run = await self.get_run(owner, run_id)
        wait = _question_of(run, ask_id)
        _check_answer(wait, value)
        record = StepRecord(wait.step, wait.n, dumps(value), wait.pos, now())
        update = RunUpdate(
            status=RunStatus.QUEUED, expect=frozenset({RunStatus.WAITING}), expect_wait=wait.id, clear_waiting=True
        )
        items = [("input.received", {"ask_id": wait.id}), ("status", {"status": "queued", "reason": "answered"})]
        try:
            await self.events.append_group(run.run_id, items, update, step=record)
        except StatusConflict:
            _question_of(await self.get_run(owner, run_id), wait.id)  # says why: answered, cancelled, ended
            raise RunNotWaiting(f"run {run_id} no longer waits for {wait.id}") from None
        log_run("resumed", run, by="answer", wait_id=wait.id)
        await self.broker.queued(run.pipeline)
        return await self.get_run(owner, run_id)

    def follow(
        self, run: Run, after: int, write: Write | None = None, joined: Joined | None = None
    ) -> AsyncGenerator[list[Frame], None]:
        """The run's events after ``after`` as SSE frames: history, then live, until
        ``end``; with ``write``, live frames are written with it; from the channel
        ``joined`` when ``join_run`` read the run (``events.stream.follow``)."""
        return follow(self.store, self.hub, run.run_id, after, self.settings.sse_heartbeat_s, write, joined)

    async def follow_session(self, owner: str, session_id: str, after: int) -> AsyncGenerator[list[Frame], None]:
        """Every event of the session's runs after cursor ``after`` as SSE frames:
        history, then live, until the session is deleted or expires.
        ``SessionNotFound`` (before any frame) unless the owner's session is live."""
        key = (await self.sessions.visible(owner, session_id)).session_id  # the store's key of the owner's session

        async def is_open() -> bool:
            session = await self.store.get_session(key)
            if session is None or session.deleted or session.owner != owner:
                return False
            ttl = self.settings.session_ttl_s
            return not session.expired(ttl, now()) or bool(await self.store.unfinished_runs(key))

        heartbeat = self.settings.sse_heartbeat_s
        return follow_session(self.store, self.hub, owner, key, after, heartbeat, is_open)

    async def wait(self, run: Run, timeout_s: float) -> Run | None:
        """The finished run, or None if it is still unfinished after ``timeout_s``."""
        if run.status.finished:
            return run
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s), contextlib.aclosing(self.follow(run, run.last_seq)) as events:
                async for _ in events:
                    pass
        finished = await self.get_run(run.owner, run.run_id)
        return finished if finished.status.finished else None

    async def unserved_pipelines(self) -> dict[str, int]:
        """Pipelines with queued runs that no live worker serves (their runs wait, queued)."""
        live_since = now() - WORKER_LIVE_LEASES * self.settings.lease_s
        return await self.store.unserved_pipelines(live_since)

    # -- sessions --------------------------------------------------------------

    async def create_session(
        self,
        owner: str,
        metadata: dict[str, Any] | None = None,
        session_id: str | None = None,
        if_exists: IfExists = IfExists.RAISE,
    ) -> Session:
        """A new session (``SessionExists`` when the chosen id is taken: ``runyard.sessions``)."""
        return (await self.sessions.create(owner, metadata, session_id, if_exists))[0]

    async def get_session(self, owner: str, session_id: str) -> tuple[Session, str, list[dict[str, Any]]]:
        """The session, its status (``idle``, ``busy`` or ``expired``) and its history."""
        view, history = await self.sessions.get(owner, session_id)
        return view.session, view.status, history

    async def delete_session(self, owner: str, session_id: str) -> None:
        """Cancel the session's unfinished runs and forget its memory (``Sessions.delete``)."""
        await self.sessions.delete(owner, session_id)
        # its streams here end now (elsewhere: at a heartbeat)
        self.hub.resync([session_channel(owner, _session_key(owner, session_id))])

    async def _announce(self, cancelled: list[Cancelled]) -> None:
        """Publish the ends of runs the store cancelled, and tell the workers of
        those that were running to stop now (their fenced writes already fail)."""
        if not cancelled:
            return
        await self.events.publish([event for run in cancelled for event in run.events])
        for run in cancelled:
            metrics.RUNS_TOTAL.labels(run.pipeline, RunStatus.CANCELLED.value).inc()
            log_run("ended", run, status=RunStatus.CANCELLED.value, code="cancelled", by="store")
            if not run.was_running:
                continue
            try:
                await self.broker.signal(CANCEL, run.run_id)
            except Exception:  # committed all the same; its worker learns at its next write or renewal
                log.warning("run %s: cancelled, but its worker could not be told at once", run.run_id, exc_info=True)


def _session_key(owner: str, session_id: str) -> str:
    key = session_key(owner, session_id)
    if key is None:
        raise SessionNotFound(f"no session {session_id!r}")
    return key


def _question_of(run: Run, ask_id: str | None) -> Wait:
    """The question ``run`` waits for an answer to (``ask_id``'s, when given)."""
    wait = run.waiting
    if run.status is not RunStatus.WAITING or wait is None or wait.kind != ASK:
        raise RunNotWaiting(f"run {run.run_id} is {run.status.value}, not waiting for input")
    if ask_id is not None and ask_id != wait.id:
        raise AskMismatch(f"run {run.run_id} waits for an answer to {wait.id}, not {ask_id}")
    return wait


def _check_answer(wait: Wait, value: Any) -> None:
    """``InvalidAnswer`` unless ``value`` can be stored and fits the question's schema."""
    try:
        check_depth(value, "the answer")
    except NestedTooDeep as exc:
        raise InvalidAnswer(str(exc)) from None
    if wait.schema is not None:
        problems = schema_errors(wait.schema, value)
        if problems is not None:
            raise InvalidAnswer(f"the answer does not fit the question's schema: {problems}")


def _effective_timeout(asked: float | None, declared: float | None) -> float | None:
    """A request may shorten its pipeline's declared timeout, never lengthen it."""
    if asked is None:
        return declared
    return asked if declared is None else min(asked, declared)
