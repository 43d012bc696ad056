"""The ``SessionStreams`` protocol (issue 13), beside ``base.py``, which is at its
400-line cap: ``Store`` includes it."""

from __future__ import annotations

from abc import abstractmethod
from typing import Protocol

from runyard.models import SessionEvent


class SessionStreams(Protocol):
    """Every event of every run of a session, in the order they were persisted."""

    @abstractmethod
    async def read_session_events(self, owner: str, session_id: str, after: int, limit: int) -> list[SessionEvent]:
        """Up to ``limit`` events of the owner's session's runs after cursor ``after``, by cursor.

        ``after`` 0 reads from the start. Cursors are positive and grow in commit
        order: an event committed after a read has a cursor above every event
        that read returned, so paging by cursor misses and repeats nothing."""
