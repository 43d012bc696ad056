"""An answer's headers and body leave in one write (``connections.HeldHeaders``).

uvicorn writes a response's status line and headers when the app starts the
response and the body when the app sends it: two ``send`` calls for every JSON
answer. The request cycle's view of the connection holds the first write until
the next one or the loop's next turn.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.server import ServerState

from runyard.http.connections import HeldHeaders, protected_protocol


class RecordingTransport(asyncio.Transport):
    """A connection that keeps every write apart, as the socket's sends."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def next_turn(loop: asyncio.AbstractEventLoop) -> None:
    loop.run_until_complete(asyncio.sleep(0))


def held(loop: asyncio.AbstractEventLoop) -> tuple[Any, RecordingTransport]:
    """A request cycle (what of it the view uses) with the view in its connection's place."""
    transport = RecordingTransport()
    cycle = SimpleNamespace(transport=transport)
    HeldHeaders(cycle, loop)  # type: ignore[arg-type]
    return cycle, transport


def test_the_first_write_goes_out_with_the_second(loop: asyncio.AbstractEventLoop) -> None:
    cycle, transport = held(loop)
    cycle.transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert transport.writes == []
    cycle.transport.write(b"body")
    assert transport.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    assert cycle.transport is transport  # later writes go straight to the connection
    next_turn(loop)
    cycle.transport.write(b"more")
    assert transport.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"more"]


def test_a_first_write_alone_goes_out_at_the_next_turn(loop: asyncio.AbstractEventLoop) -> None:
    cycle, transport = held(loop)
    cycle.transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert cycle.transport.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\n\r\n")
    next_turn(loop)
    assert transport.writes == [b"HTTP/1.1 200 OK\r\n\r\n"]
    assert cycle.transport is transport
    cycle.transport.write(b"data: 1\n\n")
    assert transport.writes == [b"HTTP/1.1 200 OK\r\n\r\n", b"data: 1\n\n"]


def test_closing_sends_what_is_held_first(loop: asyncio.AbstractEventLoop) -> None:
    cycle, transport = held(loop)
    cycle.transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    cycle.transport.close()
    assert transport.writes == [b"HTTP/1.1 200 OK\r\n\r\n"]
    assert transport.closed
    next_turn(loop)
    assert transport.writes == [b"HTTP/1.1 200 OK\r\n\r\n"]  # once


def test_what_is_held_is_dropped_when_the_connection_went_meanwhile(loop: asyncio.AbstractEventLoop) -> None:
    cycle, transport = held(loop)
    cycle.transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.close()  # the client left: nothing more may be written
    next_turn(loop)
    assert transport.writes == []


def test_a_view_that_has_sent_what_it_held_is_freed_without_the_garbage_collector(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """(``tests/http/test_request_garbage.py`` says why that matters.)"""
    gc.disable()
    try:
        cycle, _ = held(loop)
        view = weakref.ref(cycle.transport)
        cycle.transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        next_turn(loop)  # sent by the flush the view had scheduled
        del cycle  # the request is over
        assert view() is None
    finally:
        gc.enable()


async def json_app(scope: Scope, receive: Receive, send: Send) -> None:
    body = b'{"ok":true}'
    await send(
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def stream_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    await asyncio.sleep(0.01)  # the first event is not ready when the headers are
    await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def serve(app: Any, loop: asyncio.AbstractEventLoop, request: bytes) -> RecordingTransport:
    """One request through runyard's protocol on a recording connection."""
    config = uvicorn.Config(app, access_log=False)
    config.load()
    protocol = protected_protocol(read_timeout_s=10, max_connections=10)(
        config=config, server_state=ServerState(), app_state={}, _loop=loop
    )
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(request)
    loop.run_until_complete(asyncio.sleep(0.05))
    protocol.connection_lost(None)
    return transport


def test_a_json_answer_is_one_write(loop: asyncio.AbstractEventLoop) -> None:
    request = b"POST /v1/runs HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}"
    writes = serve(json_app, loop, request).writes
    assert len(writes) == 1
    assert writes[0].startswith(b"HTTP/1.1 201 Created\r\n")
    assert writes[0].endswith(b'\r\n\r\n{"ok":true}')


def test_a_stream_sends_its_headers_before_its_first_event(loop: asyncio.AbstractEventLoop) -> None:
    writes = serve(stream_app, loop, b"GET /v1/runs/r/stream HTTP/1.1\r\nHost: t\r\n\r\n").writes
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes[0].endswith(b"\r\n\r\n")
    assert writes[1:] == [b"9\r\ndata: 1\n\n\r\n", b"0\r\n\r\n"]
