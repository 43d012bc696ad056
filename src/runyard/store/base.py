"""The store contract: the source of truth for sessions, memory, runs and events.

The contract is cut into small protocols, each naming what one part of the
runtime needs, so a reader sees what each part uses and a new backend sees its work:

- ``Lifecycle``: open, close, ping, migrate (the ``Runtime``, ``runyard migrate``);
- ``Admissions``: creating runs under quotas, idempotency keys and session entry (the ``Runtime``);
- ``RunRecords``: reading runs (the HTTP answers, through the ``Runtime``);
- ``SessionStore``: sessions and their memory (``RunContext``'s ``Memory`` and ``RunSession``, the ``Runtime``);
- ``RunQueue``: claims, leases, recovery, cancel flags, the workers registry (the ``Engine``);
- ``EventStore``: gap-free numbered events (the ``EventLog``, streams);
- ``Journal``: recorded steps and waiting runs (the ``Engine``'s replays and timers);
- ``Retention``: sweeps and forgetting (the ``Engine``'s janitor);
- ``ItemStore`` (``items.py``): the long-term store (``LongTerm``: ``/v1/store``, ``ctx.store``).
- ``CronStore`` (``store/crons.py``): crons and the firing of their due times.

``Store`` lists them all; every backend (``memory.py``, ``sqlite/``, ``postgres/``)
implements it and passes the same contract suite, organised by protocol
(``tests/store/test_contract.py``). The rules every backend shares live once:
the row codec in ``_rows.py``, numbering, fencing and conditional updates in
``_numbering.py``, sweeps' chunking in ``_sweep.py``, session entry in ``SessionEntry.check``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from runyard.errors import IdempotencyKeyReused, RunTooLarge, SessionBusy, SessionNotFound
from runyard.models import (
    Event,
    EventDraft,
    Fence,
    Message,
    Multitask,
    Run,
    RunStatus,
    RunUpdate,
    Session,
    StatusConflict,
    StepRecord,
)
from runyard.store.crons import CronStore  # issue 13: crons
from runyard.store.directory import SessionDirectory
from runyard.store.items import ItemStore
from runyard.store.journal import Journal
from runyard.store.outbox import WebhookOutbox
from runyard.store.session_streams import SessionStreams
from runyard.store.stats import RunStats  # the operations console


@dataclass(slots=True)
class AppendGroup:
    """Events of one run appended together, with the run update they carry.

    A group is atomic: all its events and its update are written, or none
    (when ``update.expect`` does not hold, or the run is no longer held under
    ``fence``). Groups of one ``append`` call share a transaction (group commit)
    but succeed or fail independently.
    """

    run_id: str
    drafts: list[EventDraft] = field(default_factory=list)
    update: RunUpdate | None = None
    fence: Fence | None = None
    step: StepRecord | None = None  # recorded with the group, in its transaction


@dataclass(frozen=True, slots=True)
class Admission:
    """What a run's creation is subject to, checked in the creation's own
    transaction, so that racing creations (in any process) cannot both pass.

    ``quota``: the owner may create at most this many runs in all (counted while
    a quota is set). ``idempotency_key``: a creation repeating an owner's key
    seen since ``since`` creates nothing and returns the first run, if its
    ``fingerprint`` (of the request) is the same; else ``IdempotencyKeyReused``.
    """

    quota: int | None = None
    idempotency_key: str | None = None
    fingerprint: str = ""
    since: float = 0.0

    def repeat_of(self, fingerprint: str, first: Run) -> Run:
        """The run a repeat of the key answers with, if it repeats the same request."""
        if fingerprint != self.fingerprint:
            raise IdempotencyKeyReused(f"Idempotency-Key {self.idempotency_key!r} was used with another request")
        return first


@dataclass(frozen=True, slots=True)
class SessionEntry:
    """How a run enters an existing session, decided in its creation's transaction
    with the session held (a row lock, or the only writer), so that creations and
    a deletion racing through any number of processes are decided one at a time.

    The session must exist, belong to the run's owner, not be deleted, and not be
    expired: idle since before ``expired_before`` with no unfinished run (else
    ``SessionNotFound``). Then ``multitask``: ``enqueue`` queues the run behind the
    others, ``reject`` refuses it (``SessionBusy``) while any run is unfinished,
    ``interrupt`` cancels every unfinished run in the same transaction.
    """

    multitask: Multitask
    expired_before: float

    def check(self, session: Session | None, run: Run, busy_with: str | None) -> None:
        """Raise unless ``run`` may enter ``session`` (as locked), given the id of its
        oldest unfinished run, if any."""
        if session is None or session.deleted or session.owner != run.owner:
            raise SessionNotFound(f"no session {run.session_id!r}")
        if busy_with is None and session.last_activity < self.expired_before:
            raise SessionNotFound(f"session {run.session_id!r} expired")
        if busy_with is not None and self.multitask is Multitask.REJECT:
            raise SessionBusy(f"session {run.session_id} has an unfinished run ({busy_with})")


@dataclass(slots=True)
class Cancelled:
    """A run the store cancelled (an interrupt, a session's deletion): its row is
    ``cancelled`` with its ``status`` and ``end`` events (to be published) and no
    lease. A worker executing it (``was_running``) has its fenced writes refused
    from then on, and is to be told to stop at once."""

    run_id: str
    was_running: bool
    events: list[Event]
    pipeline: str
    session_id: str
    owner: str
    attempt: int


@dataclass(slots=True)
class Entered:
    """A run created in an existing session, and the runs its entry cancelled."""

    run: Run
    cancelled: list[Cancelled] = field(default_factory=list)


@dataclass(slots=True)
class Claimed:
    """A run a worker claimed: now ``running`` under its lease, with the
    ``status`` event the claim appended (to be published). A cancel requested
    during an earlier attempt, whose worker died, still holds."""

    run: Run
    event: Event
    cancel_requested: bool = False


@dataclass(slots=True)
class LeaseRenewal:
    """What a worker learns when it renews its leases."""

    lost: set[str] = field(default_factory=set)  # no longer its own: stop them, write nothing more
    cancel: set[str] = field(default_factory=set)  # cancel was requested (a signal may have been missed)


AppendResult = list[Event] | StatusConflict | RunTooLarge

# RUNYARD_MAX_RUN_BYTES's default: what one run's events may weigh in the store
# (measured: the demo's ticker at 1,000,000 x 64 KiB wrote 137 MiB/s until swept).
DEFAULT_MAX_RUN_BYTES = 256 * 1024 * 1024

# A worker record unseen this long is dropped: a killed worker leaves one behind
WORKER_FORGOTTEN_S = 24 * 3600.0


class Lifecycle(Protocol):
    """Connecting, migrating and closing a store."""

    @abstractmethod
    async def open(self) -> None:
        """Connect and apply pending migrations."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections; the store may not be used afterwards."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the store cannot answer a trivial query."""

    @abstractmethod
    async def migrate(self) -> int:
        """Apply pending migrations and return the schema version."""


class Admissions(Protocol):
    """Creating runs, each checked against quotas, idempotency keys and its
    session's rules in the creation's own transaction."""

    @abstractmethod
    async def create_run(self, run: Run, new_session: Session | None = None, admission: Admission | None = None) -> Run:
        """Insert a run (and its new session, when given) in one transaction; the run stored.

        With ``admission``: ``QuotaExceeded`` (nothing written)
        when the owner's quota is used up; for a repeated idempotency key, the
        first request's run (nothing written) or ``IdempotencyKeyReused``."""

    @abstractmethod
    async def enter_session(self, run: Run, entry: SessionEntry, admission: Admission | None = None) -> Entered:
        """Insert a run into its existing session under ``entry``'s and ``admission``'s rules.

        One transaction; ``run.created_at`` becomes the session's last activity.
        A repeated idempotency key returns the first run, with nothing written
        and nothing cancelled."""

    @abstractmethod
    async def idempotent_run(self, owner: str, key: str, since: float) -> tuple[str, Run] | None:
        """The fingerprint and run of the owner's creation with ``key`` since ``since``, if any."""


@dataclass(frozen=True, slots=True)
class RunQuery:
    """Which runs a listing wants, newest first: ``owner``'s (None: every owner's), of
    ``session_id``, in ``statuses``, created in [``since``, ``until``) and containing
    ``text`` (``_listing.run_matches``) when given, at most ``limit``, older than the run ``before``."""

    owner: str | None
    session_id: str | None = None
    statuses: tuple[RunStatus, ...] = ()
    limit: int = 50
    before: str | None = None
    text: str | None = None
    since: float | None = None
    until: float | None = None


class RunRecords(Protocol):
    """Reading runs."""

    @abstractmethod
    async def get_run(self, run_id: str) -> Run | None:
        """The run, or None."""

    @abstractmethod
    async def list_runs(self, query: RunQuery) -> list[Run]:
        """The runs ``query`` asks for, newest first."""


class SessionStore(Protocol):
    """Sessions, their memory and their unfinished runs."""

    @abstractmethod
    async def create_session(self, session: Session) -> None:
        """Insert a new session."""

    @abstractmethod
    async def get_session(self, session_id: str) -> Session | None:
        """The session, deleted ones included (``deleted`` set), or None."""

    @abstractmethod
    async def touch_session(self, session_id: str, at: float) -> None:
        """Record activity at ``at``."""

    @abstractmethod
    async def delete_session(self, session_id: str, at: float) -> list[Cancelled]:
        """Delete the session, forget its memory and cancel its unfinished runs; the runs cancelled.

        All in one transaction (the runs finished at ``at``): once it has returned,
        no run of the session is unfinished, and none can be created in
        it. Its runs stay readable."""

    @abstractmethod
    async def unfinished_runs(self, session_id: str) -> list[Run]:
        """The session's unfinished (queued, running or waiting) runs, oldest first."""

    @abstractmethod
    async def history(self, session_id: str) -> list[Message]:
        """The session's memory, oldest first."""

    @abstractmethod
    async def append_message(self, session_id: str, message: Message, keep: int) -> None:
        """Append to the session's memory, keeping only the newest ``keep`` messages."""


class RunQueue(Protocol):
    """The store as the queue: claims, leases, recovery, cancel flags and the
    registry of the workers that claim."""

    claim_at_most: int | None = None  # what one claim should take (None: all it may), if appends wait for claims
    claim_gather_s: float = 0.0  # how long a worker whose claims took many runs lets more gather (Engine)

    @abstractmethod
    async def claim(
        self, worker_id: str, limit: int, at: float, lease_until: float, *, pipelines: Collection[str]
    ) -> list[Claimed]:
        """Take up to ``limit`` ready runs for ``worker_id`` and mark them running, atomically.

        A queued run is ready when it is the oldest unfinished run of its session
        (a session's runs execute one at a time, in order) and its pipeline is one
        of ``pipelines`` (those the worker serves): a run of another pipeline stays
        queued, blocking its session, until a worker serving it claims it. Ready runs are taken
        fairly across owners: fewest running runs first (counted over every
        worker), then oldest. Each claimed run gets ``worker_id``, a lease until
        ``lease_until``, ``started_at = at`` and its ``status`` event
        (``{"status": "running", "attempt": n}``) in the same transaction. Two
        workers claiming at once never get the same run.
        """

    @abstractmethod
    async def count_queued(self) -> int:
        """How many runs wait to be claimed (the deployment's queue depth)."""

    @abstractmethod
    async def renew_leases(self, worker_id: str, run_ids: Sequence[str], until: float) -> LeaseRenewal:
        """Extend this worker's leases on these runs; say which it lost and which have a cancel request."""

    @abstractmethod
    async def expired_leases(self, at: float) -> list[Run]:
        """Running runs whose lease ended before ``at``."""

    @abstractmethod
    async def request_cancel(self, run_id: str) -> None:
        """Flag a running run for cancellation until it ends.

        Its worker finds the flag when it renews its leases, should it miss the broker's signal, and
        so does the next worker to claim it."""

    @abstractmethod
    async def worker_seen(self, worker_id: str, pipelines: Collection[str], at: float) -> None:
        """Record that ``worker_id``, serving ``pipelines``, was alive at ``at``.

        The records of workers not seen for ``WORKER_FORGOTTEN_S`` (killed, never
        stopped cleanly) go."""

    @abstractmethod
    async def forget_worker(self, worker_id: str) -> None:
        """The worker stopped cleanly: it serves nothing any more."""

    @abstractmethod
    async def unserved_pipelines(self, seen_since: float) -> dict[str, int]:
        """Pipelines with queued runs no worker seen since ``seen_since`` serves, and how many wait."""


class EventStore(Protocol):
    """Runs' event logs, numbered gap-free."""

    @abstractmethod
    async def append(self, groups: Sequence[AppendGroup]) -> list[AppendResult]:
        """Persist groups in one transaction; one result per group, in order.

        Each run's events are numbered gap-free from its ``last_seq``. A group without an update that would take
        the run past the store's ``max_run_bytes`` is refused with ``RunTooLarge`` (counted over every attempt)."""

    @abstractmethod
    async def read_events(self, run_id: str, after: int, limit: int) -> list[Event]:
        """Up to ``limit`` events with ``seq > after``, in order."""


class Retention(Protocol):
    """Forgetting what is past its time."""

    @abstractmethod
    async def sweep_runs(self, finished_before: float) -> int:
        """Delete runs (and their events and steps) that finished before ``finished_before``; how many.

        In short writes (a run's events in bounded chunks), so that other writes never wait long behind a sweep."""

    @abstractmethod
    async def forget_idle_sessions(self, idle_before: float) -> int:
        """Forget the memory of sessions idle since ``idle_before``, none of whose runs is unfinished; how many."""

    @abstractmethod
    async def forget_idempotency_keys(self, before: float) -> int:
        """Forget the idempotency keys of creations before ``before``; return how many."""


class WorkerStore(
    RunQueue, EventStore, Journal, SessionStore, Retention, ItemStore, CronStore, WebhookOutbox, Protocol
):
    """What a worker's ``Engine`` needs: the queue, the event log it builds, the journal its runs replay, its
    runs' sessions (a run's end is its session's activity, and its context reads their memory) and retention."""


class Store(
    Lifecycle,
    Admissions,
    RunRecords,
    SessionStore,
    SessionDirectory,
    RunQueue,
    EventStore,
    Journal,
    Retention,
    ItemStore,
    CronStore,
    SessionStreams,
    WebhookOutbox,
    RunStats,
):
    """Every protocol above (and those of ``journal.py``, ``items.py``, ``crons.py``,
    ``directory.py``, ``session_streams.py``, ``outbox.py``, ``stats.py``), which each backend
    implements (``store_from_url``)."""
