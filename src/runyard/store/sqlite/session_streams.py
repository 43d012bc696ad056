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

# Within a run, rowids grow with seq: the run's events past the cursor are those
# past the last seq at or below it, found by scanning ``events_run_seq`` back
# from the run's end (it holds the rowid), so a read costs a seek per run of the
# session plus the events it returns, not every event of the session (filtering
# on e.id alone went through all of them: 12 ms a read at 100,000 events, 0.1
# ms this way). Only the page's sort grows with the history after the cursor.
READ = (
    "SELECT e.id, r.run_id, e.seq, e.type, e.data, e.ts FROM runs r INDEXED BY runs_session"
    " JOIN events e ON e.run_pk = r.created_seq"
    " AND e.seq > (SELECT coalesce(max(x.seq), 0) FROM events x WHERE x.run_pk = r.created_seq AND x.id <= ?1)"
    " WHERE r.owner = ?2 AND r.session_id = ?3 ORDER BY e.id LIMIT ?4"
)


class SQLiteSessionStreams(SQLiteConnection, SessionStreams):
    """``SessionStreams`` on SQLite."""

    async def read_session_events(self, owner: str, session_id: str, after: int, limit: int) -> list[SessionEvent]:
        def query(db: sqlite3.Connection) -> list[SessionEvent]:
            rows = db.execute(READ, (after, owner, session_id, max(limit, 0)))
            return [
                SessionEvent(cursor, Event(run_id, seq, type_, data, ts))
                for cursor, run_id, seq, type_, data, ts in rows
            ]

        return await self._query(query)
