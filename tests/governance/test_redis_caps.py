"""The streams-per-owner cap shared through Redis (``redis_caps.py`` under the
HTTP layer's ``StreamSlots``): one count over every process, one round trip per
stream opened, and while Redis does not answer, each process's own cap, answered
at once."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from runyard.errors import TooManyStreams
from runyard.governance import LimitRegistry
from runyard.governance.backend import CapReached
from runyard.governance.redis_caps import _TAKE as TAKE_SCRIPT
from runyard.governance.redis_caps import RedisCaps
from runyard.http.streaming import STREAM_CAPS, StreamSlots
from tests.governance.conftest import LEASE_S
from tests.governance.support import wait_until
from tests.services import redis_url
from tests.support import free_port

pytestmark = pytest.mark.redis


@pytest.fixture
async def processes(prefix: str, admin: redis.asyncio.Redis) -> AsyncIterator[list[StreamSlots]]:
    """Two processes' stream slots (2 per owner) on the test's Redis prefix."""
    registries = [LimitRegistry(), LimitRegistry()]
    for registry in registries:
        await registry.open(redis_url(prefix), lease_s=LEASE_S)
    try:
        yield [slots_of(registry, 2) for registry in registries]
    finally:
        for registry in registries:
            await registry.close()


async def held_in_redis(admin: redis.asyncio.Redis, prefix: str, owner: str, leases: int) -> bool:
    return bool(await admin.zcard(f"{prefix}limits:{STREAM_CAPS}:{owner}") == leases)


def slots_of(registry: LimitRegistry, per_owner: int) -> StreamSlots:
    return StreamSlots(per_owner, lambda: registry.caps(STREAM_CAPS, per_owner))


async def test_an_owners_streams_are_counted_over_every_process(
    processes: list[StreamSlots], admin: redis.asyncio.Redis, prefix: str
) -> None:
    a, b = processes
    first = await a.take("alice")
    await a.take("alice")
    with pytest.raises(TooManyStreams, match="in the deployment"):
        await b.take("alice")
    assert b.held("alice") == 0, "a refused take kept its place in the process's count"
    await b.take("bob")  # another owner has places of their own

    first.release()
    assert a.held("alice") == 1  # at once here; in Redis, in the background
    await wait_until(lambda: held_in_redis(admin, prefix, "alice", 1))
    await b.take("alice")

    assert a.held("alice") == 1 and b.held("alice") == 1


async def test_opening_a_stream_costs_one_redis_round_trip(prefix: str, admin: redis.asyncio.Redis) -> None:
    registry = LimitRegistry()
    await registry.open(redis_url(prefix), lease_s=LEASE_S)
    try:
        slots = slots_of(registry, 2)
        (await slots.take("warm-up")).release()  # loads the script, once per process
        sent = counting_calls(registry)
        await slots.take("carol")
        assert sent == ["take"]  # what it costs is bench/ material, not a test's
    finally:
        await registry.close()


def counting_calls(registry: LimitRegistry) -> list[object]:
    """The commands the caps send from now on, by name; the take script's calls as "take"
    (the keeper renews the leases taken meanwhile with a script of its own)."""
    client = registry._shared.client  # type: ignore[union-attr]  # the backend's, which the caps use
    sent: list[object] = []
    execute = client.execute_command
    take = hashlib.sha1(TAKE_SCRIPT.encode()).hexdigest()

    async def counted(*args: object, **options: object) -> object:
        if args[0] != "EVALSHA" or args[1] == take:
            sent.append("take" if args[0] == "EVALSHA" else args[0])
        return await execute(*args, **options)

    client.execute_command = counted  # type: ignore[method-assign]
    return sent


async def test_streams_opening_together_share_round_trips(prefix: str) -> None:
    registry = LimitRegistry()
    await registry.open(redis_url(prefix), lease_s=LEASE_S)
    try:
        slots = slots_of(registry, 2)
        (await slots.take("warm-up")).release()
        sent = counting_calls(registry)
        held = await asyncio.gather(*(slots.take(f"owner-{n}") for n in range(50)))
        assert len(held) == 50
        # the first take goes at once; the 49 asked for while it was on its way, in one more
        assert sent == ["take", "take"]
    finally:
        await registry.close()


async def test_streams_ending_together_give_their_places_back_in_one_round_trip(
    prefix: str, admin: redis.asyncio.Redis
) -> None:
    registry = LimitRegistry()
    await registry.open(redis_url(prefix), lease_s=LEASE_S)
    try:
        slots = slots_of(registry, 2)
        held = await asyncio.gather(*(slots.take(f"owner-{n}") for n in range(50)))
        caps = registry.caps(STREAM_CAPS, 2)
        assert isinstance(caps, RedisCaps)
        removals: list[int] = []
        remove = caps._remove

        async def counted(leases: list[tuple[str, str]]) -> None:
            removals.append(len(leases))
            await remove(leases)

        caps._remove = counted  # type: ignore[method-assign]
        for slot in held:
            slot.release()
        for n in range(50):
            await wait_until(lambda n=n: held_in_redis(admin, prefix, f"owner-{n}", 0))
        # after it, at most the keeper's: leases a renewal under way wrote again
        assert removals[0] == 50
    finally:
        await registry.close()


async def test_takes_of_one_key_in_one_call_count_each_other(prefix: str, admin: redis.asyncio.Redis) -> None:
    registry = LimitRegistry()
    await registry.open(redis_url(prefix), lease_s=LEASE_S)
    try:
        caps = registry.caps("places", 2)
        assert caps is not None
        await caps.take("someone-else")  # the next call takes the seven below together
        sent = counting_calls(registry)
        answers = await asyncio.gather(*(caps.take("erin") for _ in range(7)), return_exceptions=True)
        assert sent in (["take"], ["take", "take"])
        assert sum(isinstance(answer, str) for answer in answers) == 2
        assert all(isinstance(answer, CapReached) for answer in answers if not isinstance(answer, str))
        assert await admin.zcard(f"{prefix}limits:places:erin") == 2
    finally:
        await registry.close()


async def test_while_redis_does_not_answer_each_process_keeps_its_own_cap_and_answers_at_once() -> None:
    registry = LimitRegistry()
    await registry.open(f"redis://127.0.0.1:{free_port()}/0", lease_s=LEASE_S)  # nothing listens there
    try:
        slots = slots_of(registry, 2)
        started = time.perf_counter()
        held = [await slots.take("dave"), await slots.take("dave")]
        with pytest.raises(TooManyStreams, match="here"):
            await slots.take("dave")
        assert time.perf_counter() - started < 1.0, "takes waited on the unreachable Redis"
        held[0].release()
        await slots.take("dave")
    finally:
        await registry.close()
