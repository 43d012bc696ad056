"""What the Redis broker writes and reads: its URL (``?prefix=``), its channels'
names, one run's events as one pub/sub message, and the loop that reads the
subscriber connection."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError

from runyard.models import Event

if TYPE_CHECKING:
    from redis.asyncio.connection import AbstractConnection

DEFAULT_PREFIX = "runyard:"
SILENCE_S = 5.0  # a silent subscriber connection is PINGed; silent twice as long, it is presumed dead


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


class Channels:
    """The pub/sub channels under a key prefix: one per run (and per session:
    ``of`` a ``session_channel``), and one for signals."""

    def __init__(self, prefix: str) -> None:
        self._events = f"{prefix}events:".encode()
        self.control = f"{prefix}control".encode()

    def of(self, run_id: str) -> bytes:
        return self._events + run_id.encode()

    def run_of(self, channel: bytes) -> str | None:
        """The run (or session channel) whose channel ``channel`` is; None for another."""
        return channel[len(self._events) :].decode() if channel.startswith(self._events) else None


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


async def read_replies(conn: AbstractConnection, dispatch: Callable[[Any], None]) -> None:
    """Hand each reply of the subscriber connection to ``dispatch`` until the connection
    fails (it then raises). One timer watches for silence, re-armed each SILENCE_S, not
    one per read (a timeout per read was 7 % of an API process's CPU samples in
    bench/scaleout.py steady)."""
    loop = asyncio.get_running_loop()
    heard, pinged = loop.time(), False
    while True:
        try:
            async with asyncio.timeout_at(heard + SILENCE_S):
                while True:  # a read cut by the timer loses nothing: redis-py's parsers buffer
                    reply = await conn.read_response(timeout=math.inf, disconnect_on_error=False, push_request=True)
                    heard, pinged = loop.time(), False
                    dispatch(reply)
        except TimeoutError:
            if loop.time() - heard < SILENCE_S:
                continue  # not silent: heard from within SILENCE_S
            if pinged:  # a half-open TCP connection would be silent forever
                raise RedisConnectionError(f"no reply from Redis within {SILENCE_S:g}s") from None
            await conn.send_command("PING", check_health=False)
            heard, pinged = loop.time(), True
