"""The server's own accept loop and request pacing (``runyard.http.listener``,
``runyard.http.connections.Pacer``): what keeps ``/healthz`` answering within a
second while 2,000 connections arrive at once (issue 10, bench/hostile.py burst)."""

from __future__ import annotations

import asyncio
import functools
import socket
from collections import Counter
from collections.abc import Iterator

import pytest

from runyard.http.connections import Pacer
from runyard.http.listener import ACCEPT_BATCH, BatchAcceptingLoop

QUEUED = 500


@pytest.fixture
def loop() -> Iterator[BatchAcceptingLoop]:
    loop = BatchAcceptingLoop()
    yield loop
    loop.close()


def turns_until(loop: asyncio.AbstractEventLoop, done: asyncio.Future[None]) -> int:
    """Run ``loop`` until ``done``; how many turns it took."""
    turns = 0

    def tick() -> None:
        nonlocal turns
        turns += 1
        if not done.done():
            loop.call_soon(tick)

    loop.call_soon(tick)
    loop.run_until_complete(asyncio.wait_for(done, 20))
    return turns


def test_connections_queued_in_the_kernel_are_accepted_in_batches(loop: BatchAcceptingLoop) -> None:
    """uvloop (libuv) accepts one connection per turn of the loop: with 2,000
    streams open a turn took 5-13 ms, and a /healthz probe waited up to 10 s
    behind the burst in the accept queue. This loop takes ``ACCEPT_BATCH`` a turn."""
    made: list[asyncio.BaseTransport] = []
    all_made: asyncio.Future[None] = loop.create_future()

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            made.append(transport)
            if len(made) == QUEUED:
                all_made.set_result(None)

    server = loop.run_until_complete(loop.create_server(Protocol, "127.0.0.1", 0, backlog=QUEUED + 10))
    port = server.sockets[0].getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(QUEUED)]  # all queued: the loop is idle
    try:
        assert turns_until(loop, all_made) <= 3 * (QUEUED // ACCEPT_BATCH + 1)  # uvloop's own: >= QUEUED
        clients[0].sendall(b"x")  # each is a live connection of the loop
    finally:
        for client in clients:
            client.close()
        for transport in made:
            transport.close()
        server.close()
        loop.run_until_complete(server.wait_closed())
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_the_pacer_starts_at_most_per_turn_each_turn_in_order_and_all_of_them() -> None:
    """A burst's requests all arrive in a turn or two; started at once, their first
    steps made one turn of seconds in which no socket was read."""
    loop = asyncio.new_event_loop()
    try:
        pacer = Pacer(loop, per_turn=3)
        started: list[tuple[int, int]] = []  # (turn, request)
        all_started: asyncio.Future[None] = loop.create_future()

        def begin(request: int) -> None:
            started.append((turns, request))
            if len(started) == 10:
                all_started.set_result(None)

        turns = 0

        def tick() -> None:
            nonlocal turns
            turns += 1
            if not all_started.done():
                loop.call_soon(tick)

        def burst() -> None:
            for request in range(10):
                pacer.start(functools.partial(begin, request))

        loop.call_soon(tick)
        loop.call_soon(burst)
        loop.run_until_complete(asyncio.wait_for(all_started, 5))
    finally:
        loop.close()
    assert [request for _, request in started] == list(range(10))
    assert sorted(Counter(turn for turn, _ in started).values()) == [1, 3, 3, 3]
