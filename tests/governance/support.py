"""What the governance specs share: a stand-in for a run's context, a TCP proxy
to Redis that a test can cut, and child processes of a deployment
(``worker.py``) that a test starts, releases together and may kill."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

from runyard.context import RunContext
from tests.support import REPO


@dataclass
class Caller:
    """What a limit needs of a run: its owner, and somewhere to emit ``limit.wait``."""

    owner: str
    events: list[tuple[str, Any]] = field(default_factory=list)

    async def emit(self, type: str, data: Any = None) -> None:
        self.events.append((type, data))


def caller(owner: str) -> RunContext:
    return cast(RunContext, Caller(owner))


def waits(ctx: RunContext) -> bool:
    """Whether the call of ``ctx`` (made by ``caller``) said it is waiting: ``limit.wait``,
    emitted when a call is not admitted within a second (``WAIT_NOTICE_S``)."""
    return any(type == "limit.wait" for type, _ in cast(Caller, ctx).events)


async def wait_until(condition: Callable[[], bool | Awaitable[bool]], timeout_s: float = 10) -> None:
    """Until ``condition()`` holds (checked every 10 ms); ``TimeoutError`` after ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while True:
            met = condition()
            if await met if inspect.isawaitable(met) else met:
                return
            await asyncio.sleep(0.01)


class Proxy:
    """A TCP proxy in front of Redis. ``cut()`` closes every connection through it
    and refuses new ones, as a Redis gone away would; ``restore()`` serves again
    on the same port."""

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._target_url = target_url
        self._server: asyncio.Server | None = None
        self._port = 0
        self._writers: set[asyncio.StreamWriter] = set()

    def url(self, prefix: str) -> str:
        """The Redis URL through this proxy, with the key prefix."""
        parts = urlsplit(self._target_url)
        return urlunsplit(parts._replace(netloc=f"127.0.0.1:{self._port}", query=f"prefix={prefix}"))

    async def __aenter__(self) -> Proxy:
        await self.restore()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cut()

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self._port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, upstream_writer}
        try:
            await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))
        finally:
            for end in (writer, upstream_writer):
                self._writers.discard(end)
                end.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()


class Worker:
    """``python -m tests.governance.worker SPEC`` (see there): a process of the deployment."""

    def __init__(self, **spec: Any) -> None:
        self.spec = spec
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Worker:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.governance.worker",
            json.dumps(self.spec),
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert (await self.read())["ready"]
        return self

    def go(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")

    async def read(self, timeout_s: float = 30) -> dict[str, Any]:
        """The next line the worker says; its exit is an error."""
        assert self.proc is not None and self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited with {await self.proc.wait()} before saying anything more")
        message: dict[str, Any] = json.loads(line)
        return message

    async def outcomes(self, timeout_s: float = 30) -> dict[str, int]:
        """What its calls came to, once they are over."""
        outcomes: dict[str, int] = (await self.read(timeout_s))["outcomes"]
        assert self.proc is not None
        await self.proc.wait()
        return outcomes

    def kill(self) -> None:
        """``kill -9``: no clean-up of any kind."""
        if self.proc is not None and self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGKILL)

    async def stop(self) -> None:
        self.kill()
        if self.proc is not None:
            await self.proc.wait()
