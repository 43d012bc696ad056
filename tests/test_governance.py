"""Limits on external APIs within one process (local://): caps, windows, breakers,
retries, cancellation. The external API is a fake on loopback that records the
most requests it ever had in flight and answers 429 when told to (``tests.fake_api``);
the same specs on the shared ``redis://`` backend are in ``tests/governance/``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from runyard import Breaker, BreakerOpen, RunContext, Runyard, RunyardError, Settings
from runyard.runtime import Runtime
from tests.fake_api import FakeAPI, serve_fake_api


@pytest.fixture
def fake() -> Iterator[tuple[FakeAPI, str]]:
    api = FakeAPI()
    with serve_fake_api(api) as url:
        yield api, url.removesuffix("/call")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def build(**limit: Any) -> Runyard:
    app = Runyard(Settings(store="memory://"))
    app.limit("api", **limit)

    @app.pipeline("call_api")
    async def call_api(ctx: RunContext, input: dict[str, Any]) -> Any:
        async with httpx.AsyncClient(timeout=10) as client:

            async def post() -> Any:
                response = await client.post(input["url"])
                response.raise_for_status()
                return response.json()

            return await ctx.call("api", post, retries=input.get("retries", 3), tokens=input.get("tokens", 0))

    return app


async def run_all(rt: Runtime, inputs: list[dict[str, Any]], owner: str = "o") -> list[Any]:
    runs = [await rt.create_run(f"{owner}{i}", "call_api", body) for i, body in enumerate(inputs)]
    return [await rt.wait(await rt.get_run(run.owner, run.run_id), 30) for run in runs]


async def test_a_concurrency_cap_is_never_exceeded(fake: tuple[FakeAPI, str]) -> None:
    api, url = fake
    async with build(concurrency=5).running() as rt:
        done = await run_all(rt, [{"url": f"{url}/call"}] * 30)
    assert all(run.status == "succeeded" for run in done)
    assert api.max_in_flight == 5 and len(api.calls) == 30


async def test_a_429_is_retried_after_the_wait_the_api_asked_for(fake: tuple[FakeAPI, str]) -> None:
    api, url = fake
    api.fail, api.retry_after_ms = 2, 150
    async with build(concurrency=1).running() as rt:
        [done] = await run_all(rt, [{"url": f"{url}/call"}])
    assert done.status == "succeeded"
    gaps = [later - earlier for earlier, later in zip(api.calls, api.calls[1:], strict=False)]
    assert len(api.calls) == 3 and all(gap >= 0.15 for gap in gaps)


async def test_retries_stop_after_the_allowed_attempts(fake: tuple[FakeAPI, str]) -> None:
    api, url = fake
    api.fail, api.retry_after_ms = 10, 10
    async with build().running() as rt:
        [done] = await run_all(rt, [{"url": f"{url}/call", "retries": 2}])
    assert done.status == "failed" and "429" in done.error.message
    assert len(api.calls) == 3


async def test_cancelling_a_run_during_a_retry_wait_stops_it_at_once(fake: tuple[FakeAPI, str]) -> None:
    api, url = fake
    api.fail, api.retry_after_ms = 10, 5_000
    async with build(concurrency=1).running() as rt:
        run = await rt.create_run("o", "call_api", {"url": f"{url}/call"})
        assert await asyncio.to_thread(api.called.wait, 5)
        await asyncio.sleep(0.1)  # now sleeping 5 s before its retry
        cancelled_at = time.monotonic()
        await rt.cancel_run("o", run.run_id)
        done = await rt.wait(await rt.get_run("o", run.run_id), 5)
        assert done is not None and done.status == "cancelled"
        assert time.monotonic() - cancelled_at < 1
        await asyncio.sleep(0.3)
    assert len(api.calls) == 1, "no call reached the API after the cancel"
    assert rt.limits.get("api").in_flight == 0


async def test_an_open_breaker_fails_calls_fast_then_lets_one_probe_through(fake: tuple[FakeAPI, str]) -> None:
    api, url = fake
    api.fail, api.retry_after_ms = 3, 0
    # reset_s leaves the fourth run time to be created, claimed and started on a
    # loaded machine: at 0.3 s the breaker had closed again before it called (CI, once)
    async with build(breaker=Breaker(failures=3, reset_s=1.0)).running() as rt:
        failed = await run_all(rt, [{"url": f"{url}/call", "retries": 0}] * 3)
        assert [run.status for run in failed] == ["failed"] * 3
        [fast] = await run_all(rt, [{"url": f"{url}/call", "retries": 0}])
        assert fast.status == "failed" and "BreakerOpen" in fast.error.message
        assert len(api.calls) == 3, "the open breaker made no call"
        await asyncio.sleep(1.05)
        [probe] = await run_all(rt, [{"url": f"{url}/call", "retries": 0}])
        assert probe.status == "succeeded"
        [after] = await run_all(rt, [{"url": f"{url}/call", "retries": 0}])
        assert after.status == "succeeded"


async def test_a_request_window_holds_calls_beyond_its_rate() -> None:
    app = Runyard(Settings(store="memory://"))
    app.limit("api", rpm=3, tpm=1000)
    admitted: list[str] = []

    @app.pipeline("take")
    async def take(ctx: RunContext, input: dict[str, Any]) -> None:
        async with ctx.limit("api", tokens=input["tokens"]):
            admitted.append(ctx.run_id)

    async with app.running() as rt:
        runs = [await rt.create_run(f"o{i}", "take", {"tokens": 100}) for i in range(4)]
        await asyncio.sleep(0.5)
        assert len(admitted) == 3, "the fourth request waits for the minute's window"
        big = await rt.create_run("x", "take", {"tokens": 5000})
        done = await rt.wait(await rt.get_run("x", big.run_id), 5)
        assert done is not None and done.status == "failed" and "can never fit" in done.error.message
        [waiting] = [run for run in runs if run.run_id not in admitted]
        await rt.cancel_run(waiting.owner, waiting.run_id)


def test_breaker_and_limit_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        Breaker(failures=0)
    with pytest.raises(ValueError):
        Runyard().limit("x", rpm=0)
    assert issubclass(BreakerOpen, RunyardError) and BreakerOpen.code == "breaker_open"
