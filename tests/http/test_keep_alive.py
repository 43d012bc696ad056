"""An idle keep-alive connection ends at ``keep_alive_s``, but a request that
crossed its close is answered (``runyard.http.connections``).

httpx expires an idle connection after 5 s, as runyard's keep-alive does. On a
busy loop the client's next request can be in the socket when the server's
keep-alive timer fires, and uvloop runs due timers before it reads sockets:
uvicorn's close then reset the connection, and the client got a ReadError (the
fleet's 100-run spec and the chat example's 100 users, under load in CI).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest
import uvicorn
from uvicorn.server import ServerState

from runyard.http.connections import protected_protocol
from runyard.http.listener import BatchAcceptingLoop

KEEP_ALIVE_S = 0.3
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
OK = b"HTTP/1.1 200 OK"


async def unused_app(scope: object, receive: object, send: object) -> None:
    raise AssertionError("/healthz is answered by the protocol")


@pytest.fixture
def loop() -> Iterator[BatchAcceptingLoop]:
    loop = BatchAcceptingLoop()  # uvloop's loop, as `runyard serve` runs it
    yield loop
    loop.close()


@pytest.fixture
def client(loop: BatchAcceptingLoop) -> Iterator[socket.socket]:
    """A client socket served by runyard's protocol on ``loop``, with a short keep-alive."""
    config = uvicorn.Config(unused_app, timeout_keep_alive=KEEP_ALIVE_S)  # type: ignore[arg-type]
    config.load()
    protocol = protected_protocol(read_timeout_s=10, max_connections=10)
    state = ServerState()
    served, client = socket.socketpair()
    loop.run_until_complete(
        loop.connect_accepted_socket(lambda: protocol(config=config, server_state=state, app_state={}), served)
    )
    client.settimeout(0)
    yield client
    client.close()
    run_for(loop, 0.05)  # the server reads the end and closes its side


def run_for(loop: asyncio.AbstractEventLoop, seconds: float) -> None:
    loop.run_until_complete(asyncio.sleep(seconds))


def received(client: socket.socket) -> bytes:
    """What the server sent so far; b"" once it closed, an error once it reset."""
    try:
        return client.recv(65536)
    except BlockingIOError:
        return b"(nothing yet)"


def test_an_idle_connection_is_closed_after_keep_alive(loop: BatchAcceptingLoop, client: socket.socket) -> None:
    client.sendall(HEALTHZ)
    run_for(loop, 0.05)
    assert received(client).startswith(OK)
    run_for(loop, KEEP_ALIVE_S * 2)
    assert received(client) == b""


def test_a_request_sent_as_keep_alive_runs_out_on_a_busy_loop_is_answered(
    loop: BatchAcceptingLoop, client: socket.socket
) -> None:
    client.sendall(HEALTHZ)
    run_for(loop, 0.05)
    assert received(client).startswith(OK)

    time.sleep(KEEP_ALIVE_S * 2)  # the loop is busy elsewhere: the timer is due by its next turn
    client.sendall(HEALTHZ)  # the client still holds the connection as alive, and reuses it
    run_for(loop, 0.05)  # one turn sees both: the timer and the request

    assert received(client).startswith(OK)  # before: ConnectionResetError
    run_for(loop, KEEP_ALIVE_S * 2)
    assert received(client) == b""  # and keep-alive still ends it once it is idle
