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
from runyard.store.sqlite.schema import bucket_of, newest_buckets

# The session's runs first, then each one's events (CROSS JOIN; else the planner
# may read every event past the cursor). Within a run, rowids grow with seq: the
# run's events past the cursor are in the buckets from its last one back to the
# first that holds an event at or before the cursor (its oldest entry's rowid
# tells: at most 16 entries of the index, which holds the rowid), so a read costs
# a few seeks per run of the session plus the events it returns, not every event
# of the session (filtering on e.id alone went through all of them: 12 ms a read
# at 100,000 events, 0.1 ms by index). Only the page's sort grows with the
# history after the cursor.
_AFTER_CURSOR = "(SELECT min(x.id) FROM events x WHERE " + bucket_of("x.seq") + " = {n} AND x.run_pk = {run_pk}) > ?1"
READ = (
    "SELECT e.id, r.run_id, e.seq, e.type, e.data, e.ts FROM runs r INDEXED BY runs_session"
    f" CROSS JOIN events e ON {bucket_of('e.seq')} IN {newest_buckets('r.created_seq', 'r.last_bucket', _AFTER_CURSOR)}"
    " AND e.run_pk = r.created_seq AND +e.id > ?1"  # +: not a rowid range (every event past the cursor)
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
