"""The store contract of webhooks (issue 13), every backend: a run with a webhook
is never finished without its delivery queued (the outbox row is written by the
append that finishes it, however it ends), and a delivery is leased to one claim
at a time, fenced by its attempt count.

Runs once per URL in ``tests/conftest.py::STORE_URLS``, as ``test_contract.py``.
"""

from __future__ import annotations

from runyard.models import RunStatus
from runyard.outcome import Outcome
from runyard.store import Store
from runyard.store._numbering import cancel_group, end_group
from runyard.store.outbox import Delivery
from tests.store.test_contract import SERVED, T0, created, events, run, session

HOOK = "https://hooks.example.com/runyard"
RUNNING = frozenset({RunStatus.RUNNING})
FAR = T0 + 10**9  # every delivery queued by the tests is due by then


async def running_with_hook(store: Store, session_id: str = "ses_0") -> str:
    (r,) = await created(store, run(session_id, webhook=HOOK))
    (claim,) = await store.claim("w1", 1, T0, T0 + 30, pipelines=SERVED)
    assert claim.run.run_id == r.run_id
    return r.run_id


async def owed(store: Store) -> list[tuple[str, str, int]]:
    """Every delivery due by ``FAR``, claimed (and so leased) by the caller."""
    return [(d.run_id, d.url, d.attempts) for d in await store.claim_deliveries(FAR, FAR + 60, 100)]


async def test_a_run_keeps_its_webhook(store: Store) -> None:
    (r,) = await created(store, run(webhook=HOOK))
    stored = await store.get_run(r.run_id)
    assert stored is not None and stored.webhook == HOOK


async def test_a_run_ended_by_its_worker_owes_one_delivery(store: Store) -> None:
    run_id = await running_with_hook(store)
    events((await store.append([end_group(run_id, Outcome.succeeded({"ok": True}), RUNNING, T0 + 1)]))[0])
    assert await owed(store) == [(run_id, HOOK, 1)]


async def test_an_unfinished_run_owes_nothing(store: Store) -> None:
    await running_with_hook(store)
    assert await owed(store) == []


async def test_a_run_without_a_webhook_owes_nothing(store: Store) -> None:
    (r,) = await created(store, run())
    events((await store.append([cancel_group(r.run_id, T0 + 1)]))[0])
    assert await owed(store) == []


async def test_a_run_cancelled_in_the_store_owes_its_delivery(store: Store) -> None:
    (r,) = await created(store, run(webhook=HOOK))  # still queued: no worker ends it
    events((await store.append([cancel_group(r.run_id, T0 + 1)]))[0])
    assert await owed(store) == [(r.run_id, HOOK, 1)]


async def test_deleting_a_session_queues_the_deliveries_of_the_runs_it_cancels(store: Store) -> None:
    s = session()
    await store.create_session(s)
    first = await running_with_hook(store, s.session_id)
    (second,) = await created(store, run(s.session_id, webhook=HOOK))
    await store.delete_session(s.session_id, T0 + 1)
    assert sorted(await owed(store)) == sorted([(first, HOOK, 1), (second.run_id, HOOK, 1)])


async def test_a_refused_end_queues_nothing(store: Store) -> None:
    (r,) = await created(store, run(webhook=HOOK))  # queued, not running: the worker's end is refused
    (refused,) = await store.append([end_group(r.run_id, Outcome.failed("boom", "no"), RUNNING, T0 + 1)])
    assert not isinstance(refused, list)
    assert await owed(store) == []


async def test_a_claimed_delivery_is_not_claimed_again_before_its_lease_ends(store: Store) -> None:
    run_id = await running_with_hook(store)
    events((await store.append([cancel_group(run_id, T0 + 1)]))[0])
    (first,) = await store.claim_deliveries(FAR, FAR + 60, 10)
    assert await store.claim_deliveries(FAR + 59, FAR + 120, 10) == []
    # its claimer died: once its lease is over, the delivery is claimed again, one attempt more
    (again,) = await store.claim_deliveries(FAR + 60, FAR + 120, 10)
    assert (again.run_id, again.attempts) == (first.run_id, first.attempts + 1)


async def test_a_delivered_delivery_is_gone(store: Store) -> None:
    run_id = await running_with_hook(store)
    events((await store.append([cancel_group(run_id, T0 + 1)]))[0])
    (delivery,) = await store.claim_deliveries(FAR, FAR + 60, 10)
    assert await store.finish_delivery(delivery)
    assert await store.claim_deliveries(FAR + 10**6, FAR + 10**6 + 60, 10) == []


async def test_a_retried_delivery_is_due_again_at_the_time_given(store: Store) -> None:
    run_id = await running_with_hook(store)
    events((await store.append([cancel_group(run_id, T0 + 1)]))[0])
    (delivery,) = await store.claim_deliveries(FAR, FAR + 60, 10)
    assert await store.retry_delivery(delivery, FAR + 5)
    assert await store.claim_deliveries(FAR + 4, FAR + 60, 10) == []
    (again,) = await store.claim_deliveries(FAR + 5, FAR + 60, 10)
    assert again.attempts == 2


async def test_a_stale_claim_can_neither_finish_nor_retry_its_delivery(store: Store) -> None:
    run_id = await running_with_hook(store)
    events((await store.append([cancel_group(run_id, T0 + 1)]))[0])
    (stale,) = await store.claim_deliveries(FAR, FAR + 60, 10)
    (current,) = await store.claim_deliveries(FAR + 60, FAR + 120, 10)  # the stale claim's lease ran out
    assert not await store.finish_delivery(stale)
    assert not await store.retry_delivery(stale, FAR)
    assert await store.finish_delivery(current)


async def test_claims_take_the_soonest_due_first_and_at_most_the_limit(store: Store) -> None:
    ids = [await running_with_hook(store, f"ses_{i}") for i in range(3)]
    for run_id in ids:
        events((await store.append([cancel_group(run_id, T0 + 1)]))[0])
    first, second, third = await store.claim_deliveries(FAR, FAR + 60, 10)
    await store.retry_delivery(third, FAR + 1)
    await store.retry_delivery(first, FAR + 3)
    await store.retry_delivery(second, FAR + 2)
    claimed = await store.claim_deliveries(FAR + 3, FAR + 60, 2)
    assert [d.run_id for d in claimed] == [third.run_id, second.run_id]


def test_a_delivery_names_its_run_url_attempt_and_queue_time() -> None:
    assert Delivery("run_1", HOOK, 1, T0) == Delivery(run_id="run_1", url=HOOK, attempts=1, queued_at=T0)
