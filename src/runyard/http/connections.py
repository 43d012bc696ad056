"""Connection-level defences under the ASGI app: a read deadline and a connection cap.

uvicorn (0.55, httptools protocol) starts no timer when a connection opens: its
only timer is keep-alive, armed once a response has ended and cancelled by the
next byte received. A connection that sends nothing, or half a request's
headers a byte at a time, was therefore held forever (1,500 such connections
were all still open after 40 s). Its ``limit_concurrency`` counts open
connections but answers in plain text. ``ProtectedHttpProtocol`` adds both
here, on uvicorn's own protocol, so the parser, flow control and keep-alive
stay uvicorn's:

- **read deadline**: a request's line, headers and body must all arrive within
  ``read_timeout_s`` of its first byte (or of the connection opening, for a
  client that sends nothing). Past it the connection is closed, after a 408 if
  part of the headers had come. Once a request is read the deadline is off: a
  stream may stay open for hours.
- **connection cap**: past ``max_connections`` open connections, a request gets
  503 ``server_busy`` (the JSON envelope, ``Retry-After``, ``Connection: close``)
  instead of reaching the app. ``/healthz`` and ``/metrics`` are always served,
  so a full process is neither restarted by its liveness probe nor blind;
  ``/readyz`` is capped like the rest, so a load balancer stops sending it work.
- **liveness first**: ``GET``/``HEAD /healthz`` is answered by the protocol, in
  the callback that read it, through uvicorn's own request cycle but no task,
  no routing and no middleware. As a task it queued behind every task ready in
  the loop, once per step of the middleware.
- **a request that crosses the keep-alive close** is answered, not reset (see
  ``timeout_keep_alive_handler``).
- **paced starts**: at most ``STARTS_PER_TURN`` requests enter the app per turn
  of the loop; the rest start in the next turns. A burst's requests all arrive
  in one or two turns, and the next turn ran every one's first steps (routing,
  middleware, auth, the store's read submitted) before the loop read a socket again.
- **one send per answer**: uvicorn writes a response's status line and headers
  when the app starts the response, and its body when the app sends it: two
  ``send`` system calls (and two packets) for every JSON answer, though the
  app sends both in one step. ``HeldHeaders`` holds the first write until the
  next one or the loop's next turn, whichever comes first.
- **live stream bytes straight to the socket**: ``body_writer`` writes a chunk
  of a streaming body as uvicorn's ``send`` would, without its coroutine (one
  made, run and ended per live event of every stream).

With these two and the listener's batched accepts (``listener.py``), the
slowest ``/healthz`` while 2,000 stream requests arrive at once went from
9.8 s to 0.24-0.71 s (bench/hostile.py, burst; batched accepts alone: 1.8-2.7 s).
"""

from __future__ import annotations

import asyncio
import functools
import select
import weakref
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

import orjson
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from runyard.http.middleware import request_id_of

ALWAYS_SERVED = frozenset({b"/healthz", b"/metrics"})
BUSY_RETRY_AFTER_S = 5
STARTS_PER_TURN = 32


class ProtectedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a read deadline and a connection cap
    (make one for given limits with ``protected_protocol``)."""

    read_timeout_s: ClassVar[float] = 10.0
    max_connections: ClassVar[int] = 20_000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None
        self._headers_read = False
        self._bytes_read = False
        self._served_app = self.app

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_reading()

    def data_received(self, data: bytes) -> None:
        if self._read_deadline is None:
            self._start_reading()  # the first byte of a new request (keep-alive or pipelined)
        self._bytes_read = True
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._headers_read = True
        if self._path() == b"/healthz" and self.parser.get_method() in (b"GET", b"HEAD"):
            self.app = answer_alive
        elif len(self.connections) > self.max_connections and self._path() not in ALWAYS_SERVED:
            self.app = refuse_busy
        else:
            self.app = self._served_app
        super().on_headers_complete()
        # uvicorn builds the request's cycle above with the connection's transport; the
        # cycle alone writes the answer, so it alone gets the view that holds the headers
        if self.cycle is not None:
            HeldHeaders(self.cycle, self.loop)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        # uvicorn's (private) hook that starts a request's task. answer_alive never
        # waits while the transport's buffer is empty (nothing to drain before its
        # few hundred bytes), so it runs to its end here; otherwise, as a task.
        if app is answer_alive and not self.flow.write_paused and not self.transport.get_write_buffer_size():
            _run_now(cycle.run_asgi(app), self.transport)  # type: ignore[arg-type]  # uvicorn types ASGI apps more narrowly than starlette
        else:
            _pacer(self.loop).start(functools.partial(HttpToolsProtocol._start_asgi_task, self, cycle, app))

    def on_message_complete(self) -> None:
        self._stop_reading()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_reading()
        super().connection_lost(exc)

    def timeout_keep_alive_handler(self) -> None:
        # uvloop runs due timers before it reads sockets. A client that reused the
        # idle connection just before keep-alive ran out (httpx's own expiry is 5 s,
        # as uvicorn's keep-alive is) has its request in the socket when the timer
        # fires on a busy loop, and uvicorn's close resets it: the client gets a ReadError for a
        # request it cannot know was never read (the chat example's 100 users, in CI).
        # Bytes waiting crossed the close: this turn reads them, and they cancel
        # the re-armed timer as any request does.
        if self.transport.is_closing():
            return
        if _bytes_waiting(self.transport):
            again = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)
            self.timeout_keep_alive_task = again
        else:
            super().timeout_keep_alive_handler()

    def _path(self) -> bytes:
        return self.url.partition(b"?")[0]

    def _start_reading(self) -> None:
        self._headers_read = self._bytes_read = False
        self._read_deadline = self.loop.call_later(self.read_timeout_s, self._read_timed_out)

    def _stop_reading(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        answering = self.cycle is not None and not self.cycle.response_complete
        if self._bytes_read and not self._headers_read and not answering:
            # nobody is answering on this connection: say why it ends
            body = error_body("request_timeout", f"the request was not received within {self.read_timeout_s:g} s")
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
            )
        self.transport.close()


class HeldHeaders(asyncio.Transport):
    """A request cycle's view of its connection, put in the cycle's place: the
    cycle's first write (the answer's status line and headers) is held until its
    next write, which then carries both in one ``send``, or until the loop's next
    turn (a stream whose first chunk is not ready yet still sees its headers go
    out). Then the cycle gets its connection back: later writes (a stream's
    events) do not pass through here."""

    def __init__(self, cycle: RequestResponseCycle, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._cycle = cycle
        self._transport = cycle.transport
        self._loop = loop
        self._held: bytes | None = None
        self._flush: asyncio.Handle | None = None
        self._sent = False
        cycle.transport = self

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._sent:  # a caller that kept this view: straight through
            self._transport.write(data)
        elif self._held is None:
            self._held = bytes(data)
            self._flush = self._loop.call_soon(self._send_held)
        else:
            if self._flush is not None:
                self._flush.cancel()
            self._send(self._held + data)

    def _send_held(self) -> None:
        self._flush = None
        if not self._sent and self._held is not None and not self._transport.is_closing():
            self._send(self._held)

    def _send(self, data: bytes) -> None:
        # the flush's handle holds this view and this view the handle (and the
        # request's cycle): a reference cycle for the garbage collector, unless cut
        self._sent, self._held, self._flush = True, None, None
        self._cycle.transport = self._transport
        self._transport.write(data)

    def close(self) -> None:
        if self._flush is not None:  # the held bytes go first: close sends what it buffered
            self._flush.cancel()
        self._send_held()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def abort(self) -> None:
        self._transport.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return len(self._held or b"") + self._transport.get_write_buffer_size()


def body_writer(send: Send) -> Callable[[bytes], bool] | None:
    """For uvicorn's own ``send`` (httptools), a write of one chunk of a started
    chunked body straight to the connection, as ``send`` would frame it: True
    once written, False where only ``send`` may write (the client is slow, so
    its flow control must wait; or gone; or the body is not such a one). None
    for another server's ``send``. A live event of a stream was a coroutine
    made, driven and ended to write ~200 bytes: 1.33 µs a write against 0.26
    (``bench/README.md``, "A twenty-second round")."""
    cycle = getattr(send, "__self__", None)
    if not isinstance(cycle, RequestResponseCycle):
        return None

    def write(chunk: bytes) -> bool:
        if cycle.flow.write_paused or cycle.disconnected or cycle.response_complete or not cycle.chunked_encoding:
            return False
        cycle.transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        return True

    return write


def _bytes_waiting(transport: asyncio.BaseTransport) -> bool:
    """Whether the connection's socket has bytes (or its end) not read yet."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    poller = select.poll()  # not select.select: descriptors past 1,024 are common here
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class Pacer:
    """Runs at most ``per_turn`` of the starts it is given per turn of ``loop``, in
    the order given; the others wait for the next turns (``call_soon`` runs a
    callback in the turn after the one that asked, once the loop has read its
    sockets again)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, per_turn: int) -> None:
        self._loop = loop
        self._per_turn = per_turn
        self._started = 0  # this turn
        self._waiting: deque[Callable[[], None]] = deque()
        self._turn_ahead = False

    def start(self, begin: Callable[[], None]) -> None:
        if self._started < self._per_turn and not self._waiting:
            self._started += 1
            begin()
        else:
            self._waiting.append(begin)
        self._next_turn()

    def _next_turn(self) -> None:
        if not self._turn_ahead:
            self._turn_ahead = True
            self._loop.call_soon(self._turn)

    def _turn(self) -> None:
        self._turn_ahead = False
        self._started = 0
        while self._waiting and self._started < self._per_turn:
            self._started += 1
            self._waiting.popleft()()
        if self._started:
            self._next_turn()  # which counts from zero again


_pacers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pacer] = weakref.WeakKeyDictionary()


def _pacer(loop: asyncio.AbstractEventLoop) -> Pacer:
    pacer = _pacers.get(loop)
    if pacer is None:
        pacer = _pacers[loop] = Pacer(loop, STARTS_PER_TURN)
    return pacer


def _run_now(answer: Coroutine[Any, Any, None], transport: asyncio.Transport) -> None:
    """Run ``answer``, which awaits nothing pending, to its end in this callback."""
    try:
        answer.send(None)
    except StopIteration:
        return
    answer.close()  # it waited after all: the connection cannot be answered in order now
    transport.close()


ALIVE = b'{"status":"ok"}'  # as the app's own GET /healthz answers


async def answer_alive(scope: Scope, receive: Receive, send: Send) -> None:
    """``/healthz`` without entering the app: the process lives."""
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(ALIVE)).encode()),
        (b"x-request-id", request_id_of(scope).encode()),  # as every answer of the app carries one
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": ALIVE, "more_body": False})


def error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


async def refuse_busy(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer past the connection cap, without entering the app."""
    body = error_body("server_busy", "this server has too many open connections; retry later")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(BUSY_RETRY_AFTER_S).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def protected_protocol(read_timeout_s: float, max_connections: int) -> type[ProtectedHttpProtocol]:
    """The protocol class to give ``uvicorn.Config(http=...)`` for these limits."""
    return type(
        "ProtectedHttpProtocol",
        (ProtectedHttpProtocol,),
        {"read_timeout_s": read_timeout_s, "max_connections": max_connections},
    )
