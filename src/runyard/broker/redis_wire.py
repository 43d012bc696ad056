"""What the Redis broker writes and reads: its URL (``?prefix=``) and one run's
events as one pub/sub message."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from runyard.models import Event

DEFAULT_PREFIX = "runyard:"


def encode_events(origin: str, events: list[Event]) -> bytes:
    """One run's events as one message: ``[origin, run_id, [[seq, type, ts, data], ...]]``,
    then the run's ``session_channel`` when the events carry it.

    ``data`` is already UTF-8 JSON; it travels as a string so that it arrives
    byte for byte and is never parsed. ``ts`` survives exactly (orjson writes
    the shortest float that reads back the same)."""
    rows = [[event.seq, event.type, event.ts, event.data.decode()] for event in events]
    session = events[0].session
    return orjson.dumps(
        [origin, events[0].run_id, rows] if session is None else [origin, events[0].run_id, rows, session]
    )


def decode_events(message: bytes) -> tuple[str, list[Event]]:
    """The origin and events of a message written by ``encode_events`` (a
    message of an older process has no session)."""
    origin, run_id, rows, *rest = orjson.loads(message)
    session = rest[0] if rest else None
    return origin, [Event(run_id, seq, type, data.encode(), ts, session) for seq, type, ts, data in rows]


def split_url(url: str) -> tuple[str, str]:
    """The URL for redis-py (without ``prefix``, which it does not know) and the key prefix."""
    parts = urlsplit(url)
    prefix = DEFAULT_PREFIX
    query = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "prefix":
            prefix = value
        else:
            query.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(query))), prefix
