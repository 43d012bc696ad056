"""Delivering the outbox (``runyard.webhooks.outbox``), one round at a time on
the memory store: what an attempt does when the address, the run or the secret
changed since the run was created, and when retries run out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from runyard.models import Run, RunStatus, now
from runyard.observability.metrics import WEBHOOK_DELIVERIES_TOTAL
from runyard.settings import Settings
from runyard.store._numbering import cancel_group
from runyard.store.memory import MemoryStore
from runyard.webhooks import sender
from runyard.webhooks.outbox import Webhooks
from tests.webhooks.receiver import Receiver

SECRET = "whsec_test"
LATER = 10**10  # every retry is due by then


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with sender.client() as client:
        yield client


def webhooks(store: MemoryStore, **settings: object) -> Webhooks:
    fields: dict[str, object] = {"store": "memory://", "webhook_secret": SECRET, "webhook_allow_hosts": "127.0.0.1"}
    return Webhooks(Settings(**{**fields, **settings}), store)  # type: ignore[arg-type]


async def finished_with_hook(store: MemoryStore, url: str) -> str:
    run = Run(f"run_{now()}", "ses_1", "alice", "nap", RunStatus.QUEUED, None, now(), webhook=url)
    await store.create_run(run)
    await store.append([cancel_group(run.run_id, now())])
    return run.run_id


def counted(result: str) -> float:
    return WEBHOOK_DELIVERIES_TOTAL.labels(result)._value.get()


async def test_an_address_no_longer_allowed_is_refused_at_delivery_and_tried_again(http: httpx.AsyncClient) -> None:
    store = MemoryStore()
    with Receiver().running() as receiver:
        run_id = await finished_with_hook(store, receiver.url)  # allowed when the run was created
        refused = counted("refused")
        assert await webhooks(store, webhook_allow_hosts="").deliver_due(http) == 1
        assert receiver.requests == 0  # no connection to it
    assert counted("refused") == refused + 1
    (again,) = await store.claim_deliveries(LATER, LATER + 60, 10)
    assert (again.run_id, again.attempts) == (run_id, 2)


async def test_a_delivery_still_failing_past_the_retry_window_is_dropped(http: httpx.AsyncClient) -> None:
    store = MemoryStore()
    with Receiver(failures=100).running() as receiver:
        await finished_with_hook(store, receiver.url)
        gave_up = counted("gave_up")
        await webhooks(store, webhook_retry_s=0.001).deliver_due(http)
        assert receiver.requests == 1
    assert counted("gave_up") == gave_up + 1
    assert await store.claim_deliveries(LATER, LATER + 60, 10) == []


async def test_a_run_swept_before_its_delivery_is_dropped(http: httpx.AsyncClient) -> None:
    store = MemoryStore()
    with Receiver().running() as receiver:
        await finished_with_hook(store, receiver.url)
        await store.sweep_runs(LATER)
        await webhooks(store).deliver_due(http)
        assert receiver.requests == 0
    assert await store.claim_deliveries(LATER, LATER + 60, 10) == []


async def test_without_the_secret_nothing_is_sent_and_the_delivery_waits(http: httpx.AsyncClient) -> None:
    store = MemoryStore()
    with Receiver().running() as receiver:
        await finished_with_hook(store, receiver.url)
        await webhooks(store, webhook_secret=None).deliver_due(http)
        assert receiver.requests == 0
    assert len(await store.claim_deliveries(LATER, LATER + 60, 10)) == 1


async def test_a_redirect_is_not_followed(http: httpx.AsyncClient) -> None:
    store = MemoryStore()
    with Receiver(answer=307).running() as receiver:
        await finished_with_hook(store, receiver.url)
        await webhooks(store).deliver_due(http)
        assert receiver.requests == 1
    assert len(await store.claim_deliveries(LATER, LATER + 60, 10)) == 1  # a failure: tried again


async def test_a_delivered_run_is_delivered_once(http: httpx.AsyncClient) -> None:
    store = MemoryStore()
    with Receiver().running() as receiver:
        run_id = await finished_with_hook(store, receiver.url)
        hooks = webhooks(store)
        assert await hooks.deliver_due(http) == 1
        assert await hooks.deliver_due(http) == 0
        assert [d.run_id for d in receiver.delivered] == [run_id]


async def test_a_receiver_slower_than_the_timeout_is_a_timeout_tried_again(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sender, "TIMEOUT_S", 0.2)  # 10 s in production
    store = MemoryStore()
    with Receiver(hold_s=1.0).running() as receiver:
        await finished_with_hook(store, receiver.url)
        timeouts = counted("timeout")
        await webhooks(store).deliver_due(http)
        assert receiver.requests == 1
    assert counted("timeout") == timeouts + 1
    assert len(await store.claim_deliveries(LATER, LATER + 60, 10)) == 1


async def test_stopping_lets_an_attempt_under_way_finish() -> None:
    store = MemoryStore()
    with Receiver(hold_s=0.5).running() as receiver:
        run_id = await finished_with_hook(store, receiver.url)
        hooks = webhooks(store, drain_s=5)
        await hooks.start()
        await asyncio.to_thread(receiver.wait_for_requests, 1)
        await hooks.stop()  # while the receiver still holds the request
        assert [d.run_id for d in receiver.delivered] == [run_id]
    assert await store.claim_deliveries(LATER, LATER + 60, 10) == []  # delivered, not owed again
