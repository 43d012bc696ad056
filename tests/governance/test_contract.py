"""What a limit promises on every backend: ``local://`` within one process,
``redis://`` across two processes' registries on one Redis.

Each spec reads the same on both; on ``redis://`` the calls are spread over
both "processes" (registries with connections of their own), so what holds
holds deployment-wide.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from runyard.context import RunContext
from runyard.governance import Breaker, BreakerOpen, Limit
from tests.fake_api import FakeAPI
from tests.governance.conftest import Deployment
from tests.governance.support import caller, wait_until, waits


async def post(http: httpx.AsyncClient, url: str, owner: str = "o", **params: Any) -> Any:
    response = await http.post(url, params=params, headers={"x-owner": owner})
    response.raise_for_status()
    return response.json()


async def test_a_concurrency_cap_holds_across_the_deployment(
    deployment: Deployment, fake: tuple[FakeAPI, str], http: httpx.AsyncClient
) -> None:
    api, url = fake
    limits = await deployment.limit(concurrency=3)

    async def one(i: int) -> None:
        async with limits[i % 2].acquire(caller(f"o{i % 4}")):
            await post(http, url)

    await asyncio.gather(*(one(i) for i in range(24)))
    assert api.max_in_flight == 3 and len(api.calls) == 24
    assert [limit.in_flight for limit in limits] == [0, 0]


async def test_a_newcomers_single_call_gets_the_next_permit_behind_a_burst(
    deployment: Deployment, fake: tuple[FakeAPI, str], http: httpx.AsyncClient
) -> None:
    api, url = fake
    burst_limit, newcomer_limit = await deployment.limit(concurrency=2)

    async def one(limit: Limit, owner: str) -> None:
        async with limit.acquire(caller(owner)):
            await post(http, url, owner, delay=0.1)

    burst = [asyncio.create_task(one(burst_limit, "greedy")) for _ in range(20)]
    await wait_until(lambda: api.in_flight == 2)  # greedy holds both permits...
    await deployment.until_in_line(18)  # ...and 18 of its calls wait
    await one(newcomer_limit, "modest")
    started_before = api.owners.index("modest")
    for task in burst:
        task.cancel()
    await asyncio.gather(*burst, return_exceptions=True)
    assert started_before <= 2 + 2, f"the newcomer waited behind {started_before - 2} of the burst's calls"


async def test_owners_holding_equally_take_turns_least_recently_served_first(deployment: Deployment) -> None:
    limits = await deployment.limit(concurrency=1)
    order: list[str] = []

    async def one(owner: str, i: int) -> None:
        async with limits[0 if owner == "a" else 1].acquire(caller(owner)):
            order.append(f"{owner}{i}")
            await asyncio.sleep(0.02)

    holder = limits[0].acquire(caller("c"))
    await holder.__aenter__()
    calls = []
    for i in range(3):
        for owner in ("a", "b"):
            calls.append(asyncio.create_task(one(owner, i)))
            await deployment.until_in_line(len(calls))  # in line in this order
    await holder.__aexit__(None, None, None)
    await asyncio.gather(*calls)
    assert order == ["a0", "b0", "a1", "b1", "a2", "b2"]


async def test_a_waiter_cancelled_leaves_the_line_and_a_permit_is_never_stranded(deployment: Deployment) -> None:
    holder_limit, waiter_limit = await deployment.limit(concurrency=1)
    held = holder_limit.acquire(caller("a"))
    await held.__aenter__()
    waiting = asyncio.create_task(waiter_limit.acquire(caller("b")).__aenter__())
    await deployment.until_in_line(1)
    cancelled_at = time.monotonic()
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert waiting.cancelled() and time.monotonic() - cancelled_at < 2  # at once, not when a permit came
    await deployment.until_in_line(0)
    await held.__aexit__(None, None, None)
    async with asyncio.timeout(2):  # the permit went to nobody: the next caller gets it
        async with waiter_limit.acquire(caller("c")):
            assert waiter_limit.in_flight == 1
    assert holder_limit.in_flight == 0 and waiter_limit.in_flight == 0


async def test_cancelling_a_call_during_its_retry_wait_stops_it_at_once(
    deployment: Deployment, fake: tuple[FakeAPI, str], http: httpx.AsyncClient
) -> None:
    api, url = fake
    api.fail, api.retry_after_ms = 10, 5_000
    limit, other = await deployment.limit(concurrency=1)
    call = asyncio.create_task(limit.call(caller("o"), post, (http, url), {}, 3, 0))
    assert await asyncio.to_thread(api.called.wait, 5)
    await wait_until(lambda: limit.in_flight == 0)  # answered 429: permit given back, 5 s before its retry
    cancelled_at = time.monotonic()
    call.cancel()
    await asyncio.gather(call, return_exceptions=True)
    assert call.cancelled() and time.monotonic() - cancelled_at < 1
    async with asyncio.timeout(2):  # it held no permit while it waited to retry
        async with other.acquire(caller("p")):
            pass
    assert len(api.calls) == 1, "no call reached the API after the cancel"


async def test_an_open_breaker_fails_fast_everywhere_then_lets_one_probe_through(
    deployment: Deployment, fake: tuple[FakeAPI, str], http: httpx.AsyncClient
) -> None:
    api, url = fake
    api.fail, api.retry_after_ms = 3, 0
    first, second = await deployment.limit(breaker=Breaker(failures=3, reset_s=0.5))
    for _ in range(3):
        with pytest.raises(httpx.HTTPStatusError):
            await first.call(caller("o"), post, (http, url), {}, 0, 0)
    with pytest.raises(BreakerOpen):
        await second.call(caller("o"), post, (http, url), {}, 3, 0)  # an open breaker is not retried
    assert len(api.calls) == 3, "the open breaker made no call"
    await asyncio.sleep(0.55)

    async def probe(limit: Limit) -> str:
        try:
            await limit.call(caller("o"), post, (http, url), {"delay": 0.2}, 0, 0)
            return "called"
        except BreakerOpen:
            return "refused"

    outcomes = await asyncio.gather(*(probe(limit) for limit in (first, second) * 3))
    assert sorted(outcomes) == ["called"] + ["refused"] * 5, "exactly one probe while half-open"
    await first.call(caller("o"), post, (http, url), {}, 0, 0)
    await second.call(caller("o"), post, (http, url), {}, 0, 0)  # the probe's success closed it for all


async def test_a_request_window_holds_calls_beyond_its_rate(deployment: Deployment) -> None:
    limits = await deployment.limit(rpm=3, tpm=1000)
    admitted: list[int] = []
    callers = [caller(f"o{i}") for i in range(4)]

    async def take(i: int) -> None:
        async with limits[i % 2].acquire(callers[i], tokens=100):
            admitted.append(i)

    takes = [asyncio.create_task(take(i)) for i in range(4)]
    await wait_until(lambda: len(admitted) == 3 and any(waits(ctx) for ctx in callers))
    assert len(admitted) == 3, "the fourth request waits for the minute's window"
    with pytest.raises(ValueError, match="can never fit"):
        async with limits[1].acquire(caller("x"), tokens=5000):
            pass
    for task in takes:
        task.cancel()
    await asyncio.gather(*takes, return_exceptions=True)


async def test_a_token_window_counts_each_calls_tokens(deployment: Deployment) -> None:
    limits = await deployment.limit(tpm=1000)
    admitted: list[int] = []

    async def take(i: int, tokens: int, ctx: RunContext) -> None:
        async with limits[i % 2].acquire(ctx, tokens=tokens):
            admitted.append(tokens)

    async def admitted_or_waiting(ctx: RunContext, before: int) -> None:
        await wait_until(lambda: len(admitted) > before or waits(ctx))

    takes = []
    for i, tokens in enumerate([400, 400, 300, 100, 200]):
        ctx = caller("o")
        takes.append(asyncio.create_task(take(i, tokens, ctx)))
        await admitted_or_waiting(ctx, len(admitted))  # in this order: each is decided before the next asks
    assert admitted == [400, 400, 100], "the 300 and the 200 wait; the 100 fits beside the 400s"
    for task in takes:
        task.cancel()
    await asyncio.gather(*takes, return_exceptions=True)
