"""The memory store's session directory (issue 13: chosen ids, listings): the
reference for ``SessionDirectory``."""

from __future__ import annotations

import copy

from runyard.models import UNFINISHED, Message, Run, Session
from runyard.store._listing import metadata_matches
from runyard.store.base import SessionStore
from runyard.store.directory import ListedSession, SessionDirectory, SessionQuery


class MemorySessionDirectory(SessionStore, SessionDirectory):
    """Claims and lists sessions over the memory store's dictionaries."""

    _sessions: dict[str, Session]
    _memory: dict[str, list[Message]]
    _runs: dict[str, Run]

    async def claim_session(self, session: Session, expired_before: float) -> Session | None:
        found = self._sessions.get(session.session_id)
        if found is not None and not found.deleted:
            busy = await self.unfinished_runs(found.session_id)
            if busy or found.last_activity >= expired_before:
                return copy.copy(found)
        self._memory.pop(session.session_id, None)  # what a replaced session remembered goes with it
        await self.create_session(session)
        return None

    async def list_sessions(self, query: SessionQuery) -> list[ListedSession]:
        mine = [
            s
            for s in self._sessions.values()
            if s.owner == query.owner and not s.deleted and metadata_matches(s.metadata, query.metadata)
        ]
        ordered = sorted(mine, key=lambda s: (s.last_activity, s.session_id), reverse=True)
        after = [s for s in ordered if query.before is None or (s.last_activity, s.session_id) < query.before]
        busy = {run.session_id for run in self._runs.values() if run.status in UNFINISHED}
        return [ListedSession(copy.copy(s), s.session_id in busy) for s in after[: max(query.limit, 0)]]
