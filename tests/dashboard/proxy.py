"""A TCP relay in front of a test server whose open connections a test can cut at once,
as a dropped network would: the browser sees its streams reset mid-response."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterable

CHUNK = 65536


class CuttableProxy:
    """Relays 127.0.0.1:``port`` to ``target``; ``cut()`` resets every open connection."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.cuts = 0
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def cut(self) -> int:
        """Drop every connection open now; returns how many sockets were cut."""
        with self._lock:
            sockets, self._open = self._open, set()
            self.cuts += 1
        for sock in sockets:
            with contextlib.suppress(OSError):
                # linger 0: the close sends a reset, as a dropped link or a killed proxy would
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        _drop(sockets)
        return len(sockets)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.close()
        self.cut()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self._target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), name="proxy-pump", daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(CHUNK):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.difference_update((source, sink))
            _drop((source, sink))


def _drop(sockets: Iterable[socket.socket]) -> None:
    """Shut every socket down, then close them all. A close alone would leave a pump thread
    blocked reading the socket, and the connection open: only a shutdown wakes it."""
    sockets = list(sockets)
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.close()
