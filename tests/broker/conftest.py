"""Brokers for the broker tests: ``local://`` in-process, ``redis://`` on this machine's Redis.

A ``redis://`` deployment is two brokers with two hubs in one test, as two
processes would have them, each with its own connections and a key prefix of
its own test. Without Redis the test is skipped (fails under ``CI=true``, see
``tests/services.py``).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import redis.asyncio

from runyard.broker import Broker, broker_from_url
from runyard.events.hub import Hub, RunChannel
from runyard.models import Event
from tests.services import REDIS_URL, redis_url, require_redis

__all__ = ["REDIS_URL", "redis_url", "require_redis"]  # the broker tests import them from here


@pytest.fixture
async def admin() -> AsyncIterator[redis.asyncio.Redis]:
    """A connection of the test's own, for commands no broker sends."""
    require_redis()
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, so that tests never hear each other."""
    return f"runyard-test-{secrets.token_hex(6)}:"


class RecordingHub(Hub):
    """A hub that also keeps what its broker hands it, as the broker handed it."""

    def __init__(self, broker: Broker | None = None) -> None:
        super().__init__(broker.watcher if broker is not None else None)
        self.batches: list[list[Event]] = []

    @property
    def delivered(self) -> list[Event]:
        return [event for batch in self.batches for event in batch]

    def deliver(self, events: list[Event]) -> None:
        self.batches.append(list(events))
        super().deliver(events)


@dataclass
class Deployment:
    """Where runs execute (``publisher``) and where a subscriber follows them (``hub``):
    two processes' brokers on ``redis://``, the same one on ``local://``."""

    publisher: Broker
    hub: RecordingHub


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
async def deployment(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Deployment]:
    if request.param == "local":
        url = "local://"
    else:
        require_redis()
        url = redis_url(prefix)
    brokers: list[Broker] = []
    try:
        subscriber = broker_from_url(url)
        hub = RecordingHub(subscriber)
        brokers.append(subscriber)
        await subscriber.open(hub)
        publisher = subscriber
        if request.param != "local":
            publisher = broker_from_url(url)
            brokers.append(publisher)
            await publisher.open(RecordingHub(publisher))
        yield Deployment(publisher, hub)
    finally:
        for broker in brokers:
            await broker.close()


def event(run_id: str, seq: int, data: bytes | None = None, type: str = "tick") -> Event:
    return Event(run_id, seq, type, data if data is not None else b'{"i":%d}' % seq, 1_700_000_000.0 + seq / 1000)


def seqs(channel: RunChannel, first: int = 1) -> list[int]:
    """The seqs in the channel's window, if it starts at ``first`` (else none)."""
    return [seq for seq, _, _ in channel.after(first - 1, 1 << 20) or []]


async def received(channel: RunChannel, seq: int, first: int = 1, timeout_s: float = 2.0) -> list[int]:
    """The seqs in the channel's window (which starts at ``first``) once it reaches ``seq``."""
    async with asyncio.timeout(timeout_s):
        while True:
            version = channel.version
            window = seqs(channel, first)
            if window and window[-1] >= seq:
                return window
            await channel.changed_since(version)
