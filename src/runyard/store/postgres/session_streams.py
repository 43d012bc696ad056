"""The PostgreSQL store's session streams: each session's events numbered in commit order.

``append`` numbers a batch's events per session (``session_seqs``) from the
session's row of ``session_streams``, taken with an upsert after the runs' rows,
in key order. The row lock is held until the batch commits, so of two batches
writing to one session the second numbers after the first and commits after it:
a reader that pages by ``session_seq`` never finds a number committed later
below one it has passed. (A global identity column would not do: its values are
taken before commit, so a reader could pass one still uncommitted.) Events
stored before this numbering existed have none and are in no session stream.
"""

from __future__ import annotations

from runyard.models import Event, SessionEvent
from runyard.store.postgres.connection import Connection, PostgresConnection
from runyard.store.session_streams import SessionStreams

# one row per session of the batch, locked in key order (the VALUES are sorted)
TAKE_SEQS = """
INSERT INTO session_streams (owner, session_id, last_seq)
SELECT * FROM unnest($1::text[], $2::text[], $3::int8[]) ORDER BY 1, 2
ON CONFLICT (owner, session_id) DO UPDATE SET last_seq = session_streams.last_seq + EXCLUDED.last_seq
RETURNING owner, session_id, last_seq
"""
# Within a run, session_seq grows with seq: the run's events past the cursor are
# those past the last seq at or below it (a backward scan of the run's primary
# key that stops at the first match), then at most a page of them by seq; so a
# read seeks each run of the session instead of going through every event of
# it. LATERAL keeps it per run: as a join filter, the planner scanned all events
# and ran the subquery for each (0.5 s a read at 100,000 events).
READ = """
SELECT e.session_seq, r.run_id, e.seq, e.type, e.data, e.ts FROM runs r
CROSS JOIN LATERAL (
    SELECT coalesce(max(x.seq), 0) AS seen FROM events x WHERE x.run_id = r.run_id AND x.session_seq <= $3::int8
) b
CROSS JOIN LATERAL (
    SELECT * FROM events e WHERE e.run_id = r.run_id AND e.seq > b.seen AND e.session_seq IS NOT NULL
    ORDER BY e.seq LIMIT $4
) e
WHERE r.owner = $1 AND r.session_id = $2 ORDER BY e.session_seq LIMIT $4
"""


async def session_seqs(conn: Connection, events: list[Event], sessions: dict[str, tuple[str, str]]) -> list[int]:
    """Each event's number in its session's stream, in the caller's transaction.
    ``sessions``: each run's (owner, session id)."""
    counts: dict[tuple[str, str], int] = {}
    for event in events:
        key = sessions[event.run_id]
        counts[key] = counts.get(key, 0) + 1
    ordered = sorted(counts)
    rows = await conn.fetch(
        TAKE_SEQS, [key[0] for key in ordered], [key[1] for key in ordered], [counts[key] for key in ordered]
    )
    # the first number each session's events take in this batch
    following = {(owner, session_id): last - counts[(owner, session_id)] for owner, session_id, last in rows}
    numbers = []
    for event in events:
        key = sessions[event.run_id]
        following[key] += 1
        numbers.append(following[key])
    return numbers


class PostgresSessionStreams(PostgresConnection, SessionStreams):
    """``SessionStreams`` on PostgreSQL."""

    async def read_session_events(self, owner: str, session_id: str, after: int, limit: int) -> list[SessionEvent]:
        rows = await self._db().fetch(READ, owner, session_id, after, max(limit, 0))
        return [
            SessionEvent(cursor, Event(run_id, seq, type_, data, ts)) for cursor, run_id, seq, type_, data, ts in rows
        ]
