"""The SQLite store's session streams: a session's events by their rowid.

Events are stored in arrival order (``events.id``, the rowid) by the one writer
thread, so rowids grow in commit order: the rowid is the session stream's
cursor, and appending needs nothing more. (Without AUTOINCREMENT a rowid may be
reused once the highest rows are deleted; those are then the newest events of
a deleted run, and the cursor of any stream that still has events is below the
highest remaining row, so new events still come after it.)
"""

from __future__ import annotations

import sqlite3

from runyard.models import Event, SessionEvent
from runyard.store.session_streams import SessionStreams
from runyard.store.sqlite.connection import SQLiteConnection

READ = (
    "SELECT e.id, r.run_id, e.seq, e.type, e.data, e.ts FROM runs r JOIN events e ON e.run_pk = r.created_seq"
    " WHERE r.owner = ? AND r.session_id = ? AND e.id > ? ORDER BY e.id LIMIT ?"
)


class SQLiteSessionStreams(SQLiteConnection, SessionStreams):
    """``SessionStreams`` on SQLite."""

    async def read_session_events(self, owner: str, session_id: str, after: int, limit: int) -> list[SessionEvent]:
        def query(db: sqlite3.Connection) -> list[SessionEvent]:
            rows = db.execute(READ, (owner, session_id, after, max(limit, 0)))
            return [
                SessionEvent(cursor, Event(run_id, seq, type_, data, ts))
                for cursor, run_id, seq, type_, data, ts in rows
            ]

        return await self._query(query)
