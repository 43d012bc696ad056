"""Fair turns between owners: the rule the run queue and the limits share."""

from __future__ import annotations

import asyncio

from runyard.fairness import FairLines
from runyard.governance.local import FairSemaphore


def test_a_newcomer_is_served_before_an_owner_already_holding_a_slot() -> None:
    lines: FairLines[str] = FairLines()
    for i in range(5):
        lines.push("greedy", f"g{i}")
    assert lines.pop() == ("greedy", "g0")  # greedy now holds one
    lines.push("modest", "m0")
    assert lines.pop() == ("modest", "m0")


def test_owners_holding_equally_take_turns_least_recently_served_first() -> None:
    lines: FairLines[str] = FairLines()
    for owner in ("a", "b"):
        for i in range(3):
            lines.push(owner, f"{owner}{i}")
    order = []
    while (turn := lines.pop()) is not None:
        order.append(turn[1])
        lines.done(turn[0])
    assert order == ["a0", "b0", "a1", "b1", "a2", "b2"]


def test_removing_a_waiting_item_and_finishing_forget_the_owner() -> None:
    lines: FairLines[str] = FairLines()
    lines.push("a", "x")
    assert lines.remove("a", "x") and not lines.remove("a", "x")
    assert len(lines) == 0 and lines.pop() is None


async def test_a_newcomers_single_call_gets_the_next_permit_behind_a_burst() -> None:
    semaphore = FairSemaphore(1)
    order: list[str] = []

    async def call(owner: str, name: str) -> None:
        permit = await semaphore.acquire(owner)
        order.append(name)
        await asyncio.sleep(0.01)
        semaphore.release(permit)

    burst = [asyncio.create_task(call("greedy", f"g{i}")) for i in range(10)]
    await asyncio.sleep(0.005)  # g0 holds the permit, g1..g9 wait
    single = asyncio.create_task(call("modest", "m0"))
    await asyncio.gather(*burst, single)
    assert order[:2] == ["g0", "m0"]
    assert semaphore.in_flight == 0 and semaphore.queued == 0


async def test_a_waiter_cancelled_in_the_queue_gives_up_its_place() -> None:
    semaphore = FairSemaphore(1)
    permit = await semaphore.acquire("a")
    waiting = asyncio.create_task(semaphore.acquire("b"))
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert semaphore.queued == 0
    semaphore.release(permit)
    assert semaphore.in_flight == 0
