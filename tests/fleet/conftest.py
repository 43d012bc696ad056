"""A fleet on this machine: API and worker processes sharing a PostgreSQL database
and a Redis key prefix of the test's own, as a deployment would share them.

Each process is ``python -m tests.serve`` (the test app) with ``RUNYARD_ROLE``
set; a fleet is torn down (SIGTERM, then SIGKILL) and its database dropped
whatever the test did to it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.services import POSTGRES_URL, require_postgres, require_service
from tests.support import ServerProcess, free_port


def require_redis_at(port: int = 6379) -> None:
    require_service("Redis", "127.0.0.1", port)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@dataclass
class Fleet:
    """The processes of one deployment; ``start`` adds one."""

    store: str
    broker: str
    env: dict[str, str] = field(default_factory=dict)
    processes: list[ServerProcess] = field(default_factory=list)

    def start(self, role: str, **env: str) -> ServerProcess:
        return self.start_all(role, **env)[0]

    def start_all(self, *roles: str, **env: str) -> list[ServerProcess]:
        """One process per role, started together: on 2 loaded cores, one after
        another took 30-37 s for four (the suite's slowest setups)."""
        settings = {"RUNYARD_STORE": self.store, "RUNYARD_BROKER": self.broker}
        started = [ServerProcess({**settings, "RUNYARD_ROLE": role, **self.env, **env}).spawn() for role in roles]
        self.processes.extend(started)
        return [process.ready(within_s=60) for process in started]

    def stop(self) -> None:
        for process in self.processes:
            if process.proc is not None and process.proc.poll() is None:
                with suppress(ProcessLookupError):
                    process.proc.send_signal(signal.SIGCONT)  # a test may have left it stopped
            process.stop()

    def query(self, sql: str, *arguments: Any) -> list[Any]:
        """Rows of ``sql`` on the fleet's database (to see what the API does not show)."""

        async def fetch() -> list[Any]:
            conn = await asyncpg.connect(self.store)
            try:
                return list(await conn.fetch(sql, *arguments))
            finally:
                await conn.close()

        return asyncio.run(fetch())

    def worker_of(self, run_id: str) -> ServerProcess:
        """The process holding ``run_id``'s lease (its worker id carries the pid)."""
        (row,) = self.query("SELECT worker_id FROM runs WHERE run_id = $1", run_id)
        pid = int(row["worker_id"].split(":")[1])
        return next(p for p in self.processes if p.proc is not None and p.proc.pid == pid)


@pytest.fixture
def database() -> Iterator[str]:
    """A PostgreSQL database of the test's own, dropped afterwards."""
    require_postgres()
    name = f"runyard_fleet_{secrets.token_hex(6)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield urlunsplit(urlsplit(POSTGRES_URL)._replace(path=f"/{name}"))
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def fleet(database: str) -> Iterator[Fleet]:
    """A deployment on this machine's Redis; leases of 2 s so recovery is quick."""
    require_redis_at()
    prefix = f"runyard-fleet-{secrets.token_hex(6)}:"
    deployment = Fleet(database, f"redis://127.0.0.1:6379/0?prefix={prefix}", {"RUNYARD_LEASE_S": "2"})
    try:
        yield deployment
    finally:
        deployment.stop()


class RedisServer:
    """A Redis server of the test's own, which the test may kill and restart."""

    def __init__(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            if os.environ.get("CI") == "true":
                pytest.fail("redis-server is required in CI", pytrace=False)
            pytest.skip("redis-server is not installed")
        self.executable = executable
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        command = [self.executable, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return self
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.kill()
