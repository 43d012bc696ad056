"""Scheduled runs (issue 13): crons, and the scheduler that fires them.

A cron names a pipeline, an input and a 5-field cron ``schedule`` read in an
IANA ``timezone`` (cronsim, zoneinfo). Its ``next_run_at`` is the next due time.
Every worker's scheduler looks every ``TICK_S`` for due crons and fires each
through the store (``CronStore.fire_cron``): the due time is claimed by moving
``next_run_at`` on, conditionally on it still being that time, in the same
transaction that creates the run; so with any number of workers each due time
makes one run. The next time is the schedule's first after NOW, not after the
due time: times missed while no worker ran make one catch-up run, not one each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from runyard.broker.base import WAKE, Broker
from runyard.errors import Conflict, CronNotFound, InvalidSchedule, PipelineNotFound, SessionNotFound
from runyard.models import ID_PATTERN, Cron, Run, RunStatus, Session, new_id, now
from runyard.observability.logs import log_run
from runyard.pipeline import Pipeline
from runyard.retrying import Backoff
from runyard.session_ids import session_key
from runyard.settings import Settings
from runyard.store.base import Store
from runyard.store.crons import CronFiring

log = logging.getLogger("runyard.crons")

TICK_S = 1.0  # how late a due time may fire (plus a claim)
BATCH = 100  # due crons fired per query
FAILURE_BACKOFF = Backoff(first_s=1.0, max_s=30.0)
CRON_FIELDS = 5
UNCHANGED: Any = object()  # a PATCH that leaves the input as it is


def zone(timezone: str) -> ZoneInfo:
    """The IANA zone, or ``InvalidSchedule``."""
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # a path-like, empty or overlong name, a folder
        raise InvalidSchedule(f"unknown time zone {timezone!r}") from exc


def next_time(schedule: str, timezone: str, after: float) -> float:
    """The schedule's first time strictly after ``after`` (unix seconds), read in ``timezone``.

    ``InvalidSchedule`` for anything but a valid 5-field cron expression (or a
    schedule that never comes, such as ``0 0 30 2 *``)."""
    if len(schedule.split()) != CRON_FIELDS:
        raise InvalidSchedule(f"schedule {schedule!r} is not a 5-field cron expression")
    start = datetime.fromtimestamp(after, UTC).astimezone(zone(timezone))
    try:
        return next(CronSim(schedule, start)).timestamp()
    except (CronSimError, StopIteration) as exc:
        raise InvalidSchedule(f"schedule {schedule!r}: {exc or 'never comes'}") from exc


UPDATE_TRIES = 5  # a change races a firing at most once a period: this is plenty


def _reschedule(cron: Cron, schedule: str | None, enabled: bool | None, at: float) -> None:
    """Apply a PATCH's schedule and enabled to ``cron`` (read just now); ``InvalidSchedule`` for a bad schedule."""
    if schedule is not None:
        next_time(schedule, cron.timezone, at)
        cron.schedule = schedule
    cron.enabled = cron.enabled if enabled is None else enabled
    if not cron.enabled:
        cron.next_run_at = None
    elif schedule is not None or cron.next_run_at is None:
        cron.next_run_at = next_time(cron.schedule, cron.timezone, at)
    cron.updated_at = at


class Crons:
    """The owners' crons (ownership enforced here: another owner's cron is a
    missing one) and, on workers, the scheduler that fires them."""

    def __init__(
        self,
        settings: Settings,
        pipelines: Mapping[str, Pipeline],
        store: Store,
        broker: Broker,
        *,
        check_webhook: Callable[[str | None], Awaitable[None]],
    ) -> None:
        self._settings = settings
        self._pipelines = pipelines
        self._store = store
        self._broker = broker
        self._check_webhook = check_webhook  # run creation's rule (``Webhooks.check``: 422 invalid_webhook)
        self._loop: asyncio.Task[None] | None = None

    # -- records ---------------------------------------------------------------

    async def create(
        self,
        owner: str,
        pipeline: str,
        input: Any,
        schedule: str,
        *,
        timezone: str = "UTC",
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        webhook: str | None = None,
        enabled: bool = True,
    ) -> Cron:
        """Check everything (the pipeline, the input as a run's, the schedule, the session), then store."""
        spec = self._spec(pipeline)  # what is missing first (404), then what is wrong (422)
        await self._check_webhook(webhook)
        session_key = await self._visible_session(owner, session_id) if session_id is not None else None
        created = now()
        next_at = next_time(schedule, timezone, created)
        stored_input = spec.validate_input(input)
        cron = Cron(
            cron_id=new_id("cron"),
            owner=owner,
            pipeline=pipeline,
            input=stored_input,
            schedule=schedule,
            timezone=timezone,
            created_at=created,
            updated_at=created,
            next_run_at=next_at if enabled else None,
            enabled=enabled,
            session_id=session_key,  # the store's key of the owner's session (``session_ids``)
            metadata=metadata or {},
            webhook=webhook,  # given to each run it creates
        )
        await self._store.create_cron(cron)
        return cron

    async def list_crons(self, owner: str) -> list[Cron]:
        return await self._store.list_crons(owner)

    async def get(self, owner: str, cron_id: str) -> Cron:
        cron = await self._store.get_cron(cron_id) if ID_PATTERN.fullmatch(cron_id) else None
        if cron is None or cron.owner != owner:
            raise CronNotFound(f"no cron {cron_id!r}")
        return cron

    async def update(
        self,
        owner: str,
        cron_id: str,
        *,
        schedule: str | None = None,
        input: Any = UNCHANGED,
        enabled: bool | None = None,
    ) -> Cron:
        """Change the schedule, the input or whether it is enabled. A new schedule,
        or enabling, counts from now: no catch-up for times before the change."""
        for _ in range(UPDATE_TRIES):
            cron = await self.get(owner, cron_id)
            expect_next = cron.next_run_at
            if input is not UNCHANGED:  # only then is the pipeline needed: a gone one's cron can still be disabled
                cron.input = self._spec(cron.pipeline).validate_input(input)
            _reschedule(cron, schedule, enabled, now())
            if await self._store.update_cron(cron, expect_next):
                return cron
            # a scheduler fired it meanwhile (or it was deleted): change what it is now
        raise Conflict(f"cron {cron_id} kept changing while this change was made; try again")

    async def delete(self, owner: str, cron_id: str) -> None:
        await self.get(owner, cron_id)
        if not await self._store.delete_cron(cron_id):
            raise CronNotFound(f"no cron {cron_id!r}")

    def _spec(self, pipeline: str) -> Pipeline:
        spec = self._pipelines.get(pipeline)
        if spec is None:
            raise PipelineNotFound.named(pipeline, self._pipelines)
        return spec

    async def _visible_session(self, owner: str, session_id: str) -> str:
        """The store key of the owner's live session ``session_id`` (``SessionNotFound`` otherwise)."""
        key = session_key(owner, session_id)
        session = await self._store.get_session(key) if key is not None else None
        if key is None or session is None or session.deleted or session.owner != owner:
            raise SessionNotFound(f"no session {session_id!r}")
        return key

    # -- the scheduler (workers only) ------------------------------------------

    async def start(self) -> None:
        if self._settings.executes_runs:
            self._loop = asyncio.create_task(self._tick_forever(), name="runyard-crons")

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None

    async def _tick_forever(self) -> None:
        failures = 0
        while True:
            try:
                while await self.fire_due(now()) >= BATCH:
                    pass
                failures = 0
            except Exception:
                failures += 1
                log.exception("firing due crons failed; retrying")
            await asyncio.sleep(FAILURE_BACKOFF.delay(failures) if failures else TICK_S)

    async def fire_due(self, at: float) -> int:
        """Fire every cron due at ``at`` (once each, whatever other workers do); how many were due."""
        due = await self._store.due_crons(at, BATCH)
        created = 0
        for cron in due:
            try:
                created += await self._fire(cron, at)
            except InvalidSchedule:  # its zone left the zone data, say: it must not hold up the others
                log.exception("cron %s: its schedule can no longer be read; disabling it", cron.cron_id)
                read_next, cron.enabled, cron.next_run_at = cron.next_run_at, False, None
                await self._store.update_cron(cron, read_next)
        if created:
            await self._broker.signal(WAKE)
        return len(due)

    async def _fire(self, cron: Cron, at: float) -> int:
        """Fire one due cron; 1 if this process created its run."""
        due = cron.next_run_at
        if due is None:
            return 0
        next_at = next_time(cron.schedule, cron.timezone, max(at, due))
        run = self._run(cron, at)
        if run is None:  # its pipeline is no longer served by this app: the time passes, no run
            log.warning("cron %s: no pipeline %r; skipping %s", cron.cron_id, cron.pipeline, due)
            await self._store.fire_cron(CronFiring(cron.cron_id, due, next_at))
            return 0
        new_session = Session(run.session_id, cron.owner, at, at) if cron.session_id is None else None
        expired_before = at - self._settings.session_ttl_s
        try:
            fired = await self._store.fire_cron(
                CronFiring(cron.cron_id, due, next_at, run, new_session, expired_before)
            )
        except SessionNotFound:
            log.warning("cron %s: session %s is gone; skipping %s", cron.cron_id, cron.session_id, due)
            await self._store.fire_cron(CronFiring(cron.cron_id, due, next_at))
            return 0
        if fired:
            log_run("created", run, cron_id=cron.cron_id)
        return int(fired)

    def _run(self, cron: Cron, at: float) -> Run | None:
        spec = self._pipelines.get(cron.pipeline)
        if spec is None:
            return None
        return Run(
            run_id=new_id("run"),
            session_id=cron.session_id or new_id("ses"),
            owner=cron.owner,
            pipeline=cron.pipeline,
            status=RunStatus.QUEUED,
            input=cron.input,
            created_at=at,
            metadata={**cron.metadata, "cron_id": cron.cron_id},
            webhook=cron.webhook if isinstance(cron.webhook, str) else None,
            timeout_s=spec.timeout_s,
            max_attempts=spec.retries + 1,
        )
