"""The Redis subscriber's reading loop (``redis_wire.read_replies``) on a fake
connection: silence is PINGed, a connection still silent is dropped, and a
connection that speaks is never PINGed whatever the timer does, nor loses a
reply to it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from runyard.broker import redis_wire
from runyard.broker.redis_wire import read_replies

SILENCE_S = 0.25  # a stall of the loop longer than 0.6 of it would PING the connection that speaks


class FakeConnection:
    """Receives ``replies`` (each after a delay from the one before), answers a PING
    with a PONG at once if told to; buffers as redis-py's parsers do: a read cut
    short by the timer loses nothing (a queue)."""

    def __init__(self, replies: list[tuple[float, Any]], *, answer_pings: bool = False) -> None:
        self.received: asyncio.Queue[Any] = asyncio.Queue()
        self.answer_pings = answer_pings
        self.pings = 0
        self.feeder = asyncio.get_running_loop().create_task(self._feed(replies))

    async def _feed(self, replies: list[tuple[float, Any]]) -> None:
        for delay, reply in replies:
            await asyncio.sleep(delay)
            self.received.put_nowait(reply)

    async def read_response(self, **_: Any) -> Any:
        reply = await self.received.get()
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def send_command(self, *args: Any, **_: Any) -> None:
        assert args == ("PING",)
        self.pings += 1
        if self.answer_pings:
            self.received.put_nowait(b"PONG")


@pytest.fixture(autouse=True)
def short_silence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_wire, "SILENCE_S", SILENCE_S)


async def test_a_silent_connection_is_pinged_then_dropped() -> None:
    conn = FakeConnection([])
    started = time.monotonic()
    with pytest.raises(RedisConnectionError):
        await read_replies(conn, lambda reply: None)  # type: ignore[arg-type]
    assert conn.pings == 1
    assert time.monotonic() - started >= 2 * SILENCE_S


async def test_a_connection_that_speaks_is_not_pinged_and_loses_no_reply() -> None:
    # a reply every 0.4 SILENCE_S for 5 SILENCE_S: the timer fires several times meanwhile
    replies: list[tuple[float, Any]] = [(0.4 * SILENCE_S, [b"message", b"ch", b"%d" % i]) for i in range(12)]
    conn = FakeConnection([*replies, (0.0, OSError("gone"))])
    got: list[Any] = []
    with pytest.raises(OSError):
        await read_replies(conn, got.append)  # type: ignore[arg-type]
    assert got == [reply for _, reply in replies]
    assert conn.pings == 0


async def test_an_answered_ping_keeps_the_connection() -> None:
    # silent for 2.5 SILENCE_S: PINGed once or twice, answered each time, never dropped
    conn = FakeConnection([(2.5 * SILENCE_S, [b"message", b"ch", b"late"]), (0.0, OSError("gone"))], answer_pings=True)
    got: list[Any] = []
    with pytest.raises(OSError):
        await read_replies(conn, got.append)  # type: ignore[arg-type]
    assert conn.pings >= 1
    assert got[-1] == [b"message", b"ch", b"late"]
