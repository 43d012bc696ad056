"""The store's part for sessions under ids the client chose, and for listing
an owner's sessions (``runyard.sessions``; keys: ``runyard.session_ids``).

Its own module, beside ``base.py``, which ``Store`` includes it from."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Protocol

from runyard.models import Session


@dataclass(frozen=True, slots=True)
class SessionQuery:
    """Which sessions a listing wants: ``owner``'s live (not deleted) sessions,
    newest activity first (then by key, descending), at most ``limit``, after
    ``before`` (the ``(last_activity, key)`` of the previous page's last), whose
    metadata has every ``(key, value)`` of ``metadata``: a string equal to
    ``value``, or another JSON value whose compact JSON text is ``value``."""

    owner: str
    limit: int = 50
    before: tuple[float, str] | None = None
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class ListedSession:
    """A session as listed, and whether it has an unfinished run."""

    session: Session
    busy: bool


class SessionDirectory(Protocol):
    """Sessions created under an id the client chose, and listing an owner's sessions."""

    @abstractmethod
    async def claim_session(self, session: Session, expired_before: float) -> Session | None:
        """Insert ``session`` unless a live session has its key; None when inserted, else that session.

        Atomic (two racing claims of one key: one inserts, the other gets its
        session). A deleted session of that key, or an expired one (idle since before
        ``expired_before``, no unfinished run), is not live: ``session`` replaces
        it, with no memory."""

    @abstractmethod
    async def list_sessions(self, query: SessionQuery) -> list[ListedSession]:
        """The sessions ``query`` asks for, newest activity first."""
