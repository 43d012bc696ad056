"""The store contract: the source of truth for sessions, memory, runs and events.

Every backend (``memory.py``, ``sqlite.py``, later ``postgres.py``) implements this
ABC and passes the same contract suite (``tests/store/test_contract.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from runyard.models import (
    Event,
    EventDraft,
    Message,
    Run,
    RunStatus,
    RunUpdate,
    Session,
    StatusConflict,
)


@dataclass(slots=True)
class AppendGroup:
    """Events of one run appended together, with the run update they carry.

    A group is atomic: all its events and its update are written, or none
    (when ``update.expect`` does not hold). Groups of one ``append`` call share a
    transaction (group commit) but succeed or fail independently.
    """

    run_id: str
    drafts: list[EventDraft] = field(default_factory=list)
    update: RunUpdate | None = None


AppendResult = list[Event] | StatusConflict


class Store(ABC):
    """Sessions, memory, runs and their event logs, durable and consistent."""

    # -- lifecycle -------------------------------------------------------------

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

    # -- sessions and memory ---------------------------------------------------

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
    async def delete_session(self, session_id: str) -> None:
        """Mark the session deleted and forget its memory; its runs stay."""

    @abstractmethod
    async def forget_idle_sessions(self, idle_before: float) -> int:
        """Forget the memory of sessions idle since before ``idle_before`` and with no
        run queued or running; return how many."""

    @abstractmethod
    async def history(self, session_id: str) -> list[Message]:
        """The session's memory, oldest first."""

    @abstractmethod
    async def append_message(self, session_id: str, message: Message, keep: int) -> None:
        """Append to the session's memory, keeping only the newest ``keep`` messages."""

    # -- runs ------------------------------------------------------------------

    @abstractmethod
    async def create_run(self, run: Run, new_session: Session | None = None) -> None:
        """Insert a run, and its new session in the same transaction when given."""

    @abstractmethod
    async def get_run(self, run_id: str) -> Run | None:
        """The run, or None."""

    @abstractmethod
    async def list_runs(
        self,
        owner: str | None,
        *,
        session_id: str | None = None,
        statuses: Sequence[RunStatus] | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[Run]:
        """Runs newest first (``owner`` None: every owner's), after the run ``before``."""

    @abstractmethod
    async def runs_with_status(self, statuses: Iterable[RunStatus]) -> list[Run]:
        """Every run in one of ``statuses``, oldest first."""

    @abstractmethod
    async def unfinished_runs(self, session_id: str) -> list[Run]:
        """The session's queued or running runs, oldest first."""

    @abstractmethod
    async def expired_leases(self, at: float) -> list[Run]:
        """Running runs whose lease ended before ``at``."""

    @abstractmethod
    async def renew_leases(self, worker_id: str, run_ids: Sequence[str], until: float) -> None:
        """Extend the leases this worker holds on these running runs."""

    @abstractmethod
    async def sweep_runs(self, finished_before: float) -> int:
        """Delete runs (and their events) that finished before ``finished_before``."""

    # -- events ----------------------------------------------------------------

    @abstractmethod
    async def append(self, groups: Sequence[AppendGroup]) -> list[AppendResult]:
        """Persist groups in one transaction, numbering each run's events gap-free
        from its ``last_seq``; one result per group, in order."""

    @abstractmethod
    async def read_events(self, run_id: str, after: int, limit: int) -> list[Event]:
        """Up to ``limit`` events with ``seq > after``, in order."""
