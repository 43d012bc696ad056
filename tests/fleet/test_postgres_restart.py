"""A fleet rides out a restart of its PostgreSQL server: runs carry on, their
events wait in the workers until the store answers again, and a client that
resumes its stream sees every event once.

The server restarted is a private one (initdb in a temporary directory), never
the machine's shared PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fleet.conftest import Fleet, require_redis_at
from tests.fleet.test_fleet import assert_one_clean_log
from tests.remote import FINISHED, OWNER, create, wait_until
from tests.sse_reader import frames
from tests.support import free_port

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

PG_BIN = Path("/usr/lib/postgresql")


def _pg_tool(name: str) -> str:
    versions = sorted(PG_BIN.iterdir()) if PG_BIN.is_dir() else []
    for version in reversed(versions):
        if (version / "bin" / name).exists():
            return str(version / "bin" / name)
    message = f"PostgreSQL's {name} is not installed under {PG_BIN}"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class PrivatePostgres:
    """A PostgreSQL server of the test's own, run as the ``postgres`` user."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.data = root / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *command], check=True, capture_output=True)

    def init(self) -> PrivatePostgres:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self._as_postgres(_pg_tool("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")
        return self

    def pg_ctl(self, action: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.root / "log")
        pg_ctl = _pg_tool("pg_ctl")
        self._as_postgres(pg_ctl, "-D", str(self.data), "-o", options, "-l", log, "-m", "fast", "-w", action)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    with tempfile.TemporaryDirectory(prefix="runyard-pg-") as root:
        os.chmod(root, 0o755)
        server = PrivatePostgres(Path(root)).init()
        server.pg_ctl("start")
        try:
            yield server
        finally:
            server.pg_ctl("stop")


async def resuming_stream(url: str, run_id: str) -> list[dict[str, Any]]:
    """Every event of the run, reconnecting with Last-Event-ID after any failure."""
    events: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=url, headers=OWNER, timeout=30) as client:
        for _ in range(100):
            headers = {"Last-Event-ID": str(events[-1]["seq"])} if events else {}
            try:
                async with client.stream("GET", f"/v1/runs/{run_id}/stream", headers=headers) as response:
                    if response.status_code != 200:
                        await asyncio.sleep(0.2)  # 503 while the store is down
                        continue
                    async for frame in frames(response):
                        if "id" in frame:
                            events.append(frame["data"])
                            if frame["event"] == "end":
                                return events
            except httpx.HTTPError:
                await asyncio.sleep(0.2)
    raise AssertionError(f"the stream never ended; got {len(events)} events")


def test_a_postgresql_restart_mid_run_loses_and_repeats_no_event(private_postgres: PrivatePostgres) -> None:
    require_redis_at()
    fleet = Fleet(private_postgres.url, "redis://127.0.0.1:6379/0?prefix=runyard-pg-restart:", {})
    try:
        api = fleet.start("api")
        fleet.start("worker")
        run_id = create(api.url, "ticker", {"marker": "through", "count": 150, "interval_ms": 20})

        async def restart_midway() -> list[dict[str, Any]]:
            reader = asyncio.create_task(resuming_stream(api.url, run_id))
            await asyncio.sleep(1.0)
            await asyncio.to_thread(private_postgres.pg_ctl, "restart")
            return await reader

        events = asyncio.run(restart_midway())
        assert_one_clean_log(events)
        assert [e["data"]["i"] for e in events if e["type"] == "tick"] == list(range(150))
        final = wait_until(api.url, run_id, FINISHED)
        assert final["status"] == "succeeded", final
        after = create(api.url, "nap", {"seconds": 0.01})
        assert wait_until(api.url, after, FINISHED, timeout=15)["status"] == "succeeded"
    finally:
        fleet.stop()
