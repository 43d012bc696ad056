"""The PostgreSQL store's session streams: each session's events numbered in commit order.

``append`` numbers a batch's events per session from the session's row of
``session_streams``, taken with an upsert after the runs' rows, in key order
(``batches.WRITE_BATCH``, with the places ``session_places`` gives each event).
The row lock is held until the batch commits, so of two batches writing to one
session the second numbers after the first and commits after it: a reader that
pages by ``session_seq`` never finds a number committed later below one it has
passed. (A global identity column would not do: its values are taken before
commit, so a reader could pass one still uncommitted.) Events stored before
this numbering existed have none and are in no session stream.
"""

from __future__ import annotations

from typing import NamedTuple

from runyard.models import Event, SessionEvent
from runyard.store.postgres.connection import PostgresConnection
from runyard.store.session_streams import SessionStreams


class SessionPlaces(NamedTuple):
    owners: list[str]
    session_ids: list[str]
    counts: list[int]  # events per session
    sessions: list[int]  # per event: its session's 1-based index in the lists above
    places: list[int]  # per event: its place among its session's events of the batch


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


def session_places(events: list[Event], sessions: dict[str, tuple[str, str]]) -> SessionPlaces:
    """The batch's sessions and each event's place in them, as ``WRITE_BATCH``
    takes them (its $1-$3, and each event's session and place).
    ``sessions``: each run's (owner, session id)."""
    counts: dict[tuple[str, str], int] = {}
    for event in events:
        key = sessions[event.run_id]
        counts[key] = counts.get(key, 0) + 1
    ordered = sorted(counts)
    index = {key: i for i, key in enumerate(ordered, start=1)}
    placed = dict.fromkeys(ordered, 0)
    indices, places = [], []
    for event in events:
        key = sessions[event.run_id]
        placed[key] += 1
        indices.append(index[key])
        places.append(placed[key])
    return SessionPlaces(
        [key[0] for key in ordered], [key[1] for key in ordered], [counts[key] for key in ordered], indices, places
    )


class PostgresSessionStreams(PostgresConnection, SessionStreams):
    """``SessionStreams`` on PostgreSQL."""

    async def read_session_events(self, owner: str, session_id: str, after: int, limit: int) -> list[SessionEvent]:
        rows = await self._db().fetch(READ, owner, session_id, after, max(limit, 0))
        return [
            SessionEvent(cursor, Event(run_id, seq, type_, data, ts)) for cursor, run_id, seq, type_, data, ts in rows
        ]
