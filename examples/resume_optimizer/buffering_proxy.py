"""A reverse proxy that buffers responses, as many proxies and load balancers do.

It passes each request to the upstream at once, but holds the response's bytes
until it has at least ``buffer_bytes`` of them (4096, like nginx with
``proxy_buffering on`` and 4k buffers) or the upstream closes, then sends on all
it holds. A stream of small SSE events therefore reaches the browser late and
in bursts: progress that should tick every second arrives after a minute, all
at once. Padding every frame to the buffer's size (``RUNYARD_SSE_PAD_BYTES=4096``
or ``?pad=4096``) makes each event fill the buffer by itself, so each one goes
through as soon as it is sent.

    python -m examples.resume_optimizer.buffering_proxy --port 8081 --upstream 127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from types import TracebackType

READ_BYTES = 65536


class BufferingProxy:
    """``async with BufferingProxy("127.0.0.1", 8000) as proxy:`` then talk to ``proxy.url``."""

    def __init__(self, upstream_host: str, upstream_port: int, buffer_bytes: int = 4096) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.buffer_bytes = buffer_bytes
        self.url = ""
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> BufferingProxy:
        self._server = await asyncio.start_server(self._connection, host, port)
        bound = self._server.sockets[0].getsockname()
        self.url = f"http://{bound[0]}:{bound[1]}"
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def __aenter__(self) -> BufferingProxy:
        return await self.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _connection(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            self._connections.discard(task)
            return
        pumps = {
            asyncio.create_task(self._forward(client_reader, upstream_writer)),
            asyncio.create_task(self._buffered(upstream_reader, client_writer)),
        }
        try:
            # either side closing ends the exchange: a client that leaves closes the upstream too
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for writer in (client_writer, upstream_writer):
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            self._connections.discard(task)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Requests go through unbuffered."""
        with contextlib.suppress(OSError):
            while data := await reader.read(READ_BYTES):
                writer.write(data)
                await writer.drain()

    async def _buffered(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Responses are held until ``buffer_bytes`` have gathered or the upstream is done."""
        held = bytearray()
        with contextlib.suppress(OSError):
            while data := await reader.read(READ_BYTES):
                held += data
                if len(held) >= self.buffer_bytes:
                    writer.write(bytes(held))
                    held.clear()
                    await writer.drain()
            if held:
                writer.write(bytes(held))
                await writer.drain()


async def _serve(port: int, upstream: str, buffer_bytes: int) -> None:
    host, _, upstream_port = upstream.rpartition(":")
    proxy = await BufferingProxy(host or "127.0.0.1", int(upstream_port), buffer_bytes).start(port=port)
    print(f"holding responses until {buffer_bytes} bytes: {proxy.url} -> http://{upstream}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await proxy.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--upstream", default="127.0.0.1:8000", help="host:port of the runyard server")
    parser.add_argument("--buffer-bytes", type=int, default=4096)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, args.upstream, args.buffer_bytes))


if __name__ == "__main__":
    main()
