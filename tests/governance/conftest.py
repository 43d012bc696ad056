"""Fixtures of the governance specs: a deployment's limits on ``local://`` (one
process) or ``redis://`` (two registries on one Redis and key prefix, as two
processes would have them), the fake external API, and a Redis connection of
the test's own for looking at the keys."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio

from runyard.governance import Breaker, Limit, LimitRegistry
from tests.fake_api import FakeAPI, serve_fake_api
from tests.governance.support import wait_until
from tests.services import REDIS_URL, redis_url, require_redis

LEASE_S = 1.5  # short, so that a dead process's permits come back within the test


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, so that tests never see each other's limits."""
    return f"runyard-test-{secrets.token_hex(6)}:"


@pytest.fixture
async def admin(prefix: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A connection of the test's own; the test's keys are deleted afterwards."""
    require_redis()
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await delete_keys(client, prefix)
        await client.aclose()


async def delete_keys(client: redis.asyncio.Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)


@pytest.fixture
def fake() -> Iterator[tuple[FakeAPI, str]]:
    """The fake external API and the URL to POST calls to."""
    api = FakeAPI()
    with serve_fake_api(api) as url:
        yield api, url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


class Deployment:
    """The limit ``api`` as the processes of one deployment see it: on ``redis://``
    each process has a registry of its own on the same Redis and prefix; on
    ``local://`` there is one process."""

    def __init__(self, url: str, prefix: str = "") -> None:
        self.url = url
        self.prefix = prefix
        self.registries: list[LimitRegistry] = []
        self._admin: redis.asyncio.Redis | None = None

    async def limit(self, processes: int = 2, breaker: Breaker | None = None, **limit: Any) -> list[Limit]:
        """``api`` in each of ``processes`` processes (all the same one on ``local://``)."""
        if self.url == "local://":
            processes = 1
        for _ in range(processes):
            registry = LimitRegistry()
            registry.declare("api", breaker=breaker, **limit)
            await registry.open(self.url, lease_s=LEASE_S)
            self.registries.append(registry)
        return [registry.get("api") for registry in self.registries] * (2 if processes == 1 else 1)

    async def in_line(self) -> int:
        """Calls waiting for a permit of ``api``, as the one place deciding who goes
        next records them: the local semaphore's lines, or Redis's set of waiters (a
        call is in it once its script has run, not as soon as its task starts). A spec
        that needs callers in line in a given order waits for this count after each."""
        if self.url == "local://":
            return self.registries[0].get("api").queued
        if self._admin is None:
            self._admin = redis.asyncio.Redis.from_url(REDIS_URL)
        return int(await self._admin.zcard(f"{self.prefix}limits:api:waiters"))

    async def until_in_line(self, calls: int) -> None:
        """Until exactly ``calls`` callers wait in line for a permit of ``api``."""

        async def in_line() -> bool:
            return await self.in_line() == calls

        await wait_until(in_line)

    async def close(self) -> None:
        for registry in self.registries:
            await registry.close()
        if self._admin is not None:
            await self._admin.aclose()


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
async def deployment(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Deployment]:
    if request.param == "local":
        deployment = Deployment("local://")
    else:
        require_redis()
        deployment = Deployment(redis_url(prefix), prefix)
    try:
        yield deployment
    finally:
        await deployment.close()
        if request.param == "redis":
            client = redis.asyncio.Redis.from_url(REDIS_URL)
            await delete_keys(client, prefix)
            await client.aclose()
