"""A listening socket that accepts its pending connections in batches, under uvloop.

libuv accepts one connection per turn of the loop (libuv PR 3696, "don't accept()
connections in a loop"). A turn is quick on an idle server, but with 2,000
streams open it took 5-13 ms, so a burst of 2,000 connections waited in the
kernel's accept queue (1,700 deep, measured with ``ss``) for up to 10 s, and a
``/healthz`` probe opened meanwhile waited behind all of them: the loop itself
never stalled for more than 0.4 s. asyncio's own loop accepts up to the backlog
per turn; this does the same on uvloop, ``ACCEPT_BATCH`` at a time, and hands
each socket to uvloop (``connect_accepted_socket``), which serves it as its own.

Only plain TCP servers are served this way; TLS and sockets passed in stay uvloop's.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

import uvloop

log = logging.getLogger("runyard.server")

ACCEPT_BATCH = 128  # connections accepted per turn of the loop (asyncio's own: the backlog, 2,048)
ACCEPT_RETRY_S = 1.0  # after EMFILE and the like, as asyncio waits


class BatchAcceptingLoop(uvloop.Loop):
    """uvloop's loop, whose plain TCP servers accept in batches."""

    async def create_server(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], asyncio.Protocol],
        host: str | None = None,
        port: int | None = None,
        **options: Any,
    ) -> Any:
        if options.get("sock") is not None or options.get("ssl") is not None or port is None:
            return await super().create_server(protocol_factory, host, port, **options)  # type: ignore[arg-type]
        sockets = await _listening_sockets(self, host, port, options.get("backlog", 100))
        return BatchAcceptingServer(self, protocol_factory, sockets)


async def _listening_sockets(
    loop: asyncio.AbstractEventLoop, host: str | None, port: int, backlog: int
) -> list[socket.socket]:
    """A listening socket for each address ``host`` names (every interface for None or "")."""
    infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # the IPv4 address has its own
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class BatchAcceptingServer:
    """What uvicorn uses of an ``asyncio.Server`` (``sockets``, ``close``,
    ``wait_closed``), over sockets read by ``add_reader``."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol_factory: Callable[[], asyncio.Protocol],
        sockets: list[socket.socket],
    ) -> None:
        self._loop = loop
        self._protocol_factory = protocol_factory
        self.sockets = sockets
        self._opening: set[asyncio.Task[Any]] = set()  # connections being handed to uvloop
        self._closed = asyncio.Event()
        for sock in sockets:
            loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, listening: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = listening.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return  # none left
            except OSError as exc:  # out of descriptors, say: those in the queue wait, as under asyncio
                log.error("cannot accept connections for %g s: %s", ACCEPT_RETRY_S, exc)
                self._loop.remove_reader(listening.fileno())
                self._loop.call_later(ACCEPT_RETRY_S, self._resume, listening)
                return
            conn.setblocking(False)
            opening = self._loop.create_task(self._open(conn))
            self._opening.add(opening)
            opening.add_done_callback(self._opening.discard)

    async def _open(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._protocol_factory, conn)
        except OSError as exc:  # the client left before it was served
            log.debug("an accepted connection failed to open: %s", exc)
            conn.close()

    def _resume(self, listening: socket.socket) -> None:
        if not self._closed.is_set():
            self._loop.add_reader(listening.fileno(), self._accept, listening)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()

    async def wait_closed(self) -> None:
        await self._closed.wait()


def loop_factory(
    default: Callable[[], asyncio.AbstractEventLoop] | None,
) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """``BatchAcceptingLoop`` where uvicorn would run uvloop's loop; ``default`` otherwise
    (asyncio's own loop accepts in batches already)."""
    return BatchAcceptingLoop if default is uvloop.new_event_loop else default
