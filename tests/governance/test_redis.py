"""``redis://`` limits beyond the contract: real processes sharing one Redis
(``worker.py``, started as children and released together), processes killed
with ``kill -9``, Redis going away under them (a proxy that the test cuts),
and what the registry does with each broker URL.

Every test has a key prefix of its own; the fake external API (in a thread of
the test process) sees every process's calls and counts what was in flight.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
import redis.asyncio

from runyard.errors import ConfigurationError
from runyard.governance import Breaker, BreakerOpen, LimitRegistry, PermitLost
from runyard.observability import metrics
from tests.fake_api import FakeAPI
from tests.governance.conftest import LEASE_S
from tests.governance.support import Proxy, Worker, caller, wait_until
from tests.services import REDIS_URL, redis_url

pytestmark = pytest.mark.redis


async def registry(url: str, lease_s: float = LEASE_S, name: str = "api", **limit: Any) -> LimitRegistry:
    """This test process as one more process of the deployment."""
    limits = LimitRegistry()
    limits.declare(name, **limit)
    await limits.open(url, lease_s=lease_s)
    return limits


async def in_line(admin: redis.asyncio.Redis, prefix: str, calls: int) -> bool:
    """Whether exactly ``calls`` callers wait in Redis's line for a permit of ``api``."""
    return bool(await admin.zcard(f"{prefix}limits:api:waiters") == calls)


async def more_calls(api: FakeAPI) -> None:
    """Until the API has seen one more call than it has now."""
    seen = len(api.calls)
    await wait_until(lambda: len(api.calls) > seen)


async def started(*workers: Worker) -> list[Worker]:
    """Start the workers (in parallel: each imports runyard), then release them together."""
    await asyncio.gather(*(worker.start() for worker in workers))
    for worker in workers:
        worker.go()
    return list(workers)


async def test_three_processes_never_have_more_than_the_cap_in_flight(
    admin: redis.asyncio.Redis, prefix: str, fake: tuple[FakeAPI, str]
) -> None:
    api, url = fake
    spec = {"redis": redis_url(prefix), "limit": {"concurrency": 5}, "url": url, "calls": 50}
    workers = await started(*(Worker(**spec, owner=f"owner-{i}") for i in range(3)))
    outcomes = [await worker.outcomes() for worker in workers]
    assert outcomes == [{"ok": 50}] * 3
    assert api.max_in_flight == 5, "5 in flight at most, across the 3 processes' 150 calls"
    assert len(api.calls) == 150


async def test_a_killed_processs_permits_come_back_when_their_lease_ends_and_no_sooner(
    admin: redis.asyncio.Redis, prefix: str
) -> None:
    holder = Worker(redis=redis_url(prefix), limit={"concurrency": 5}, mode="hold", calls=5)
    await started(holder)
    assert (await holder.read())["holding"] == 5
    limits = await registry(redis_url(prefix), concurrency=5)
    try:
        limit = limits.get("api")
        admissions = [limit.acquire(caller(f"w{i}")) for i in range(6)]  # held until the registry closes
        held_at: list[float] = []

        async def wait_for_a_permit(i: int) -> None:
            await admissions[i].__aenter__()
            held_at.append(time.monotonic())

        holder.kill()
        killed_at = time.monotonic()
        waiters = [asyncio.create_task(wait_for_a_permit(i)) for i in range(6)]
        await wait_until(lambda: in_line(admin, prefix, 6))  # each asked Redis, and was told to wait
        assert held_at == [], "the dead process's leases still run: no permit is granted meanwhile"
        assert await admin.zcard(f"{prefix}limits:api:permits") == 5
        await wait_until(lambda: len(held_at) == 5, timeout_s=LEASE_S + 1)
        assert max(held_at) - killed_at <= LEASE_S + 0.5, "back within the lease (and a renewal's slack)"
        assert await in_line(admin, prefix, 1), "the sixth still waits"
        assert sum(not waiter.done() for waiter in waiters) == 1
        assert await admin.zcard(f"{prefix}limits:api:permits") == 5, "never more than the cap"
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    finally:
        await holder.stop()
        await limits.close()


async def test_a_dead_apps_permits_come_back_after_RUNYARD_LIMIT_LEASE_S(
    admin: redis.asyncio.Redis, prefix: str
) -> None:
    """Issue 10: a served app's permits came back after a fixed 10 s, whatever
    the deployment needed; now after ``RUNYARD_LIMIT_LEASE_S``."""
    lease_s = 1.0
    settings = {"limit_lease_s": lease_s}
    holder = Worker(redis=redis_url(prefix), limit={"concurrency": 2}, mode="hold", calls=2, settings=settings)
    await started(holder)
    assert (await holder.read())["holding"] == 2
    seconds, micros = await admin.time()
    ends = [score for _, score in await admin.zrange(f"{prefix}limits:api:permits", 0, -1, withscores=True)]
    left_ms = [end - (seconds * 1000 + micros / 1000) for end in ends]
    assert len(left_ms) == 2 and all(0 < left <= lease_s * 1000 for left in left_ms), left_ms
    limits = await registry(redis_url(prefix), concurrency=2)
    try:
        holder.kill()
        killed_at = time.monotonic()
        admissions = [limits.get("api").acquire(caller(f"w{i}")) for i in range(2)]
        async with asyncio.timeout(lease_s + 1.0):  # the default lease (10 s) would time out here
            for admission in admissions:
                await admission.__aenter__()
        assert time.monotonic() - killed_at <= lease_s + 0.5
        for admission in admissions:
            await admission.__aexit__(None, None, None)
    finally:
        await holder.stop()
        await limits.close()


async def test_while_redis_fails_calls_wait_and_the_cap_holds(
    admin: redis.asyncio.Redis, prefix: str, fake: tuple[FakeAPI, str]
) -> None:
    api, url = fake
    async with Proxy(REDIS_URL) as proxy:
        spec = {"redis": proxy.url(prefix), "lease_s": 2.0, "limit": {"concurrency": 3}, "url": f"{url}?delay=0.1"}
        workers = await started(*(Worker(**spec, owner=f"owner-{i}", calls=20) for i in range(2)))
        for _ in range(2):
            await more_calls(api)  # the calls flow (again)
            await proxy.cut()  # every connection of both processes drops, and none is accepted
            await asyncio.sleep(0.5)  # Redis away for half a second
            await proxy.restore()
        outcomes = [await worker.outcomes() for worker in workers]
    assert outcomes == [{"ok": 20}] * 2, "every call made it once Redis was back"
    assert api.max_in_flight <= 3, "no call was let through unseen while Redis was away"


async def test_a_holder_that_cannot_renew_stops_its_call_before_redis_hands_the_permit_on(
    admin: redis.asyncio.Redis, prefix: str
) -> None:
    async with Proxy(REDIS_URL) as proxy:
        cut_off = await registry(proxy.url(prefix), lease_s=1.0, concurrency=1)
        other = await registry(redis_url(prefix), lease_s=1.0, concurrency=1)
        try:
            stopped_at: list[float] = []

            async def long_call() -> None:
                try:
                    async with cut_off.get("api").acquire(caller("a")):
                        await asyncio.sleep(30)
                except PermitLost:
                    stopped_at.append(time.monotonic())

            holding = asyncio.create_task(long_call())
            await wait_until(lambda: cut_off.get("api").in_flight == 1)
            granted: list[float] = []

            async def wait_then_call() -> None:
                async with other.get("api").acquire(caller("b")):
                    granted.append(time.monotonic())

            waiting = asyncio.create_task(wait_then_call())
            await wait_until(lambda: in_line(admin, prefix, 1))
            cut_at = time.monotonic()
            await proxy.cut()
            await asyncio.wait_for(waiting, timeout=3)
            granted_at = granted[0]
            await holding
            assert stopped_at and stopped_at[0] < granted_at, "the call stopped before the permit went elsewhere"
            assert granted_at - cut_at <= 1.0 + 0.5, "the permit came back with its lease"
            assert cut_off.get("api").in_flight == 0
        finally:
            await proxy.restore()
            await cut_off.close()
            await other.close()


async def test_cancelling_a_waiter_while_redis_is_away_stops_it_at_once(
    admin: redis.asyncio.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with Proxy(REDIS_URL) as proxy:
        limits = await registry(proxy.url(prefix), concurrency=1)
        try:
            await proxy.cut()
            waiting = asyncio.create_task(limits.get("api").acquire(caller("a")).__aenter__())
            await wait_until(lambda: "Redis failed" in caplog.text)  # failing, backing off, retrying...
            assert not waiting.done()
            cancelled_at = time.monotonic()
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
            assert waiting.cancelled() and time.monotonic() - cancelled_at < 2  # at once, not when Redis came back
        finally:
            await proxy.restore()
            await limits.close()


async def test_a_token_window_is_shared_by_two_processes(
    admin: redis.asyncio.Redis, prefix: str, fake: tuple[FakeAPI, str]
) -> None:
    api, url = fake
    spec = {"redis": redis_url(prefix), "limit": {"rpm": 100, "tpm": 1000}, "url": url, "tokens": 100}
    workers = await started(*(Worker(**spec, owner=f"owner-{i}", calls=10, for_s=1.5) for i in range(2)))
    outcomes = [await worker.outcomes() for worker in workers]
    assert sum(outcome.get("ok", 0) for outcome in outcomes) == 10, "1000 tokens a minute: 10 calls of 100"
    assert sum(outcome.get("cancelled", 0) for outcome in outcomes) == 10, "the others wait for the window"
    assert len(api.calls) == 10


async def test_a_breaker_opened_by_one_process_fails_calls_fast_in_another(
    admin: redis.asyncio.Redis, prefix: str, fake: tuple[FakeAPI, str], http: httpx.AsyncClient
) -> None:
    api, url = fake
    api.fail, api.retry_after_ms = 3, 0
    breaker = {"failures": 3, "reset_s": 30}
    [opener] = await started(Worker(redis=redis_url(prefix), limit={"breaker": breaker}, url=url, calls=3))
    assert await opener.outcomes() == {"HTTPStatusError": 3}
    limits = await registry(redis_url(prefix), breaker=Breaker(**breaker))
    try:
        started_at = time.monotonic()
        with pytest.raises(BreakerOpen):
            async with limits.get("api").acquire(caller("b")):
                await http.post(url)
        assert time.monotonic() - started_at < 0.5
        assert len(api.calls) == 3, "the call was never made"
    finally:
        await limits.close()


async def test_an_owners_burst_in_one_process_does_not_hold_up_another_owners_call_in_another(
    admin: redis.asyncio.Redis, prefix: str, fake: tuple[FakeAPI, str], http: httpx.AsyncClient
) -> None:
    api, url = fake
    burst = Worker(redis=redis_url(prefix), limit={"concurrency": 5}, url=f"{url}?delay=0.3", owner="a", calls=100)
    await started(burst)
    limits = await registry(redis_url(prefix), concurrency=5)
    try:

        async def queued() -> bool:
            return api.in_flight == 5 and await admin.zcard(f"{prefix}limits:api:waiters") == 95

        await wait_until(queued)  # owner a: 5 calls in flight, 95 waiting in Redis
        before = len(api.owners)
        async with limits.get("api").acquire(caller("b")):
            await http.post(url, headers={"x-owner": "b"})
        a_first = api.owners.index("b") - before
        assert a_first <= 5, f"b waited behind {a_first} of a's calls: more than one slot turnover"
    finally:
        await burst.stop()
        await limits.close()


async def test_this_processs_permits_and_breaker_show_in_its_metrics(admin: redis.asyncio.Redis, prefix: str) -> None:
    name = f"metrics-{prefix[-13:-1]}"
    one = await registry(redis_url(prefix), name=name, concurrency=3, breaker=Breaker(failures=1, reset_s=30))
    other = await registry(redis_url(prefix), name=name, concurrency=3, breaker=Breaker(failures=1, reset_s=30))
    try:
        held = [one.get(name).acquire(caller("a")) for _ in range(2)]
        for admission in held:
            await admission.__aenter__()
        assert metrics.REGISTRY.get_sample_value("runyard_limit_in_flight", {"limit": name}) == 2
        assert metrics.REGISTRY.get_sample_value("runyard_limit_wait_seconds_count", {"limit": name}) == 2
        for admission in held:
            await admission.__aexit__(None, None, None)
        assert metrics.REGISTRY.get_sample_value("runyard_limit_in_flight", {"limit": name}) == 0
        with pytest.raises(RuntimeError):
            async with other.get(name).acquire(caller("b")):
                raise RuntimeError("the API failed")
        assert metrics.REGISTRY.get_sample_value("runyard_breaker_open", {"limit": name}) == 1
    finally:
        await one.close()
        await other.close()


async def test_the_registry_shares_limits_on_redis_and_keeps_them_in_process_on_local(
    admin: redis.asyncio.Redis, prefix: str
) -> None:
    limits = LimitRegistry()
    limits.declare("api", concurrency=1)
    await limits.open("local://")
    async with limits.get("api").acquire(caller("a")):
        assert [key async for key in admin.scan_iter(match=f"{prefix}*")] == []
    with pytest.raises(ConfigurationError, match="redis://"):
        await limits.open("rabbit://127.0.0.1")
    await limits.open(redis_url(prefix), lease_s=LEASE_S)
    await limits.open(redis_url(prefix))  # again, on the same URL: nothing to do
    with pytest.raises(RuntimeError, match="close"):
        await limits.open(redis_url("elsewhere:"))

    async def hold() -> None:
        async with limits.get("api").acquire(caller("a")):
            await asyncio.sleep(30)

    holding = asyncio.create_task(hold())
    await wait_until(lambda: limits.get("api").in_flight == 1)
    assert await admin.zcard(f"{prefix}limits:api:permits") == 1, "under the URL's ?prefix="
    await limits.close()  # stops the call still holding a permit, and gives the permit back
    with pytest.raises(PermitLost):
        await holding
    assert await admin.zcard(f"{prefix}limits:api:permits") == 0
    async with asyncio.timeout(1):  # in this process again, with its own permit
        async with limits.get("api").acquire(caller("b")):
            pass
