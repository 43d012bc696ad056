"""Hostile connections against a real server process (``runyard.http.connections``):
requests that never arrive whole, idle keep-alive connections, the connection cap.

Each test speaks raw HTTP/1.1 over sockets, as a slowloris client would, to a
``python -m tests.serve`` process started with the limit under test.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.remote import create
from tests.support import ServerProcess

pytestmark = [pytest.mark.server, pytest.mark.slow]

READ_TIMEOUT_S = 1.0
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    process = ServerProcess(
        {
            "RUNYARD_STORE": "memory://",
            "RUNYARD_READ_TIMEOUT_S": str(READ_TIMEOUT_S),
            "RUNYARD_KEEP_ALIVE_S": "1",
            "RUNYARD_MAX_CONNECTIONS": "3",
            "RUNYARD_SSE_HEARTBEAT_S": "0.2",
            "RUNYARD_DRAIN_S": "0.2",
        }
    ).start()
    yield process
    process.stop()


def connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.settimeout(10)  # every read below ends long before: a hang fails instead of blocking
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def assert_receives(sock: socket.socket, marker: bytes) -> None:
    received = b""
    while marker not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed before {marker!r} came"
        received += chunk


def answer_of(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, body


def test_a_connection_that_sends_half_a_request_is_answered_408_and_closed(server: ServerProcess) -> None:
    """Issue 10, slowloris: a connection that sent half its headers was held
    forever (1,500 of them for 40 s). It gets 408 ``request_timeout`` and is
    closed once ``RUNYARD_READ_TIMEOUT_S`` has passed."""
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        started = time.monotonic()
        status, headers, body = answer_of(read_until_closed(sock))
        waited = time.monotonic() - started
    assert status == 408
    assert json.loads(body)["error"]["code"] == "request_timeout"
    assert headers["connection"] == "close"
    assert READ_TIMEOUT_S * 0.9 <= waited < READ_TIMEOUT_S + 3


def test_a_request_trickled_a_byte_at_a_time_is_cut_off_at_the_read_timeout(server: ServerProcess) -> None:
    """Issue 10, slowloris: the deadline runs from the request's first byte and
    is not pushed back by each new byte, so trickling headers does not hold a
    connection open."""
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        started = time.monotonic()
        sock.settimeout(0.1)
        answer: bytes | None = None
        while answer is None and time.monotonic() - started < READ_TIMEOUT_S + 3:
            try:
                sock.sendall(b"X")
                answer = sock.recv(65536)  # the 408, or the end
            except TimeoutError:
                continue  # nothing yet: trickle the next byte
            except OSError:
                answer = b""  # reset: the server closed while a byte was in flight
        waited = time.monotonic() - started
    assert answer is not None, "the server kept a trickling connection open"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408")
    assert waited < READ_TIMEOUT_S + 1


def test_a_connection_that_sends_nothing_is_closed_after_the_read_timeout(server: ServerProcess) -> None:
    """Issue 10: a connection that sends nothing at all was never timed out; it
    is closed (without an answer: no request was made) after the read timeout."""
    with connect(server) as sock:
        started = time.monotonic()
        assert read_until_closed(sock) == b""
        assert READ_TIMEOUT_S * 0.9 <= time.monotonic() - started < READ_TIMEOUT_S + 3


def test_an_idle_keep_alive_connection_is_closed_after_keep_alive_s(server: ServerProcess) -> None:
    """An idle keep-alive connection is closed after ``RUNYARD_KEEP_ALIVE_S``;
    one that starts a new request after its response and never finishes it is
    closed by the read timeout (uvicorn's own keep-alive timer stops at its first byte)."""
    with connect(server) as idle, connect(server) as half:
        for sock in (idle, half):
            sock.sendall(HEALTHZ)
            assert_receives(sock, b'{"status":"ok"}')  # the whole answer: the connection is idle now
        half.sendall(b"GET /hea")
        started = time.monotonic()
        assert read_until_closed(idle) == b""
        assert time.monotonic() - started < 1 + 3
        assert answer_of(read_until_closed(half))[0] == 408


def test_a_stream_outlives_the_read_timeout(server: ServerProcess) -> None:
    """The read deadline covers reading a request, not answering it: a stream
    stays open (heartbeats flowing) long after ``RUNYARD_READ_TIMEOUT_S``."""
    run_id = create(server.url, "nap", {"seconds": 30})
    with connect(server) as sock:
        sock.sendall(f"GET /v1/runs/{run_id}/stream HTTP/1.1\r\nHost: t\r\nX-Client-Id: remote\r\n\r\n".encode())
        started = time.monotonic()
        received = b""
        while time.monotonic() - started < READ_TIMEOUT_S * 3:
            chunk = sock.recv(65536)
            assert chunk, "the server closed a stream at the read timeout"
            received += chunk
    assert received.count(b": ping") >= 3


def test_past_max_connections_requests_get_503_json_and_open_streams_go_on(server: ServerProcess) -> None:
    """Issue 10: there was no cap on connections. Past ``RUNYARD_MAX_CONNECTIONS``
    a request gets 503 ``server_busy`` (JSON, ``Retry-After``, then the
    connection closes); the streams already open keep receiving; ``/healthz``
    still answers; once a stream ends, requests are served again."""
    run_id = create(server.url, "nap", {"seconds": 30})
    request = f"GET /v1/runs/{run_id}/stream HTTP/1.1\r\nHost: t\r\nX-Client-Id: remote\r\n\r\n".encode()
    streams = [connect(server) for _ in range(3)]
    try:
        for stream in streams:
            stream.sendall(request)
            assert stream.recv(65536).startswith(b"HTTP/1.1 200")

        with connect(server) as extra:
            extra.sendall(f"GET /v1/runs/{run_id} HTTP/1.1\r\nHost: t\r\nX-Client-Id: remote\r\n\r\n".encode())
            status, headers, body = answer_of(read_until_closed(extra))
        assert status == 503
        assert json.loads(body)["error"]["code"] == "server_busy"
        assert headers["retry-after"] == "5"

        with connect(server) as probe:
            probe.sendall(HEALTHZ)
            assert probe.recv(65536).startswith(b"HTTP/1.1 200"), "a full server failed its liveness probe"

        for stream in streams:  # each still gets its heartbeats
            assert_receives(stream, b": ping")
    finally:
        streams.pop().close()
        for stream in streams:
            stream.close()

    deadline = time.monotonic() + 5
    status = 503
    while status == 503 and time.monotonic() < deadline:  # until the server sees the streams go
        with connect(server) as again:
            again.sendall(HEALTHZ.replace(b"/healthz", b"/readyz"))
            status = answer_of(again.recv(65536))[0]
    assert status == 200


def receive_until(sock: socket.socket, marker: bytes) -> bytes:
    received = b""
    while marker not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed before {marker!r} came"
        received += chunk
    return received


def test_healthz_is_answered_by_the_protocol_and_the_connection_serves_on(server: ServerProcess) -> None:
    """Issue 10, "a burst of 2,000 connections stalled the loop (/healthz 9 s)":
    ``GET``/``HEAD /healthz`` is answered where the request is read, without a
    task or the app. It is still HTTP/1.1 as uvicorn speaks it: the app's body and
    request id, no body for HEAD, keep-alive, pipelined requests answered in order."""
    run_id = create(server.url, "nap", {"seconds": 0})
    with connect(server) as sock:
        sock.sendall(HEALTHZ.replace(b"\r\n\r\n", b"\r\nX-Request-ID: probe-1\r\n\r\n"))
        status, headers, body = answer_of(receive_until(sock, b'{"status":"ok"}'))
        assert (status, headers["x-request-id"], body) == (200, "probe-1", b'{"status":"ok"}')
        sock.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, body = answer_of(receive_until(sock, b"\r\n\r\n"))
        assert (status, headers["content-length"], body) == (200, "15", b"")
        sock.sendall(f"GET /v1/runs/{run_id} HTTP/1.1\r\nHost: t\r\nX-Client-Id: remote\r\n\r\n".encode() + HEALTHZ)
        received = receive_until(sock, b'{"status":"ok"}')
        assert 0 < received.index(run_id.encode()) < received.index(b'{"status":"ok"}')
    with connect(server) as sock:
        sock.sendall(b"POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        status, headers, _ = answer_of(read_until_closed(sock))
    assert (status, headers["allow"]) == (405, "GET")  # other methods are the app's, as before
