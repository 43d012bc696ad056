"""The memory store's session streams (issue 13): every event of a session's
runs in append order, by cursor; the reference for ``SessionStreams``."""

from __future__ import annotations

import bisect
import itertools

from runyard.models import Event, Run, SessionEvent, session_channel
from runyard.store.session_streams import SessionStreams


class MemorySessionStreams(SessionStreams):
    """Reads the session logs the memory store's ``append`` keeps."""

    _session_logs: dict[str, list[SessionEvent]]  # session channel -> its stream, by cursor
    _runs: dict[str, Run]

    async def read_session_events(self, owner: str, session_id: str, after: int, limit: int) -> list[SessionEvent]:
        log = self._session_logs.get(session_channel(owner, session_id), [])
        start = bisect.bisect_right(log, after, key=lambda entry: entry.cursor)
        # a swept run's events leave the stream with it
        kept = (entry for entry in log[start:] if entry.event.run_id in self._runs)
        return [SessionEvent(cursor, _stored(event)) for cursor, event in itertools.islice(kept, max(limit, 0))]


def _stored(event: Event) -> Event:
    """The event as a store read returns it (``session`` is the append's, for publishing)."""
    return Event(event.run_id, event.seq, event.type, event.data, event.ts)
