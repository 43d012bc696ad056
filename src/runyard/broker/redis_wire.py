"""What the Redis broker writes and reads: its URL (``?prefix=``), one run's
events as one pub/sub message, and the script that publishes a batch of them."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from runyard.models import Event

DEFAULT_PREFIX = "runyard:"
# PUBLISH of each (channel, message) pair of its arguments, in order: a batch's messages in one call
PUBLISH_ALL = "for i = 1, #ARGV, 2 do redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) end"


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


def run_messages(origin: str, events_prefix: bytes, events: list[Event]) -> list[bytes]:
    """One run's events for its channel, and its session's (whose followers elsewhere
    read the store when they hear of them): channel, message[, channel, message]."""
    message = encode_events(origin, events)
    session = events[0].session
    if session is None:
        return [events_prefix + events[0].run_id.encode(), message]
    return [events_prefix + events[0].run_id.encode(), message, events_prefix + session.encode(), message]


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
