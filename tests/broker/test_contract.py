"""The broker contract, as streams see it through a hub (see ``runyard.broker.base``).

Runs on ``local://`` and ``redis://`` (``conftest.py::deployment``); on ``redis://``
the publisher and the subscriber's hub are two brokers, as in two processes.
"""

from __future__ import annotations

import asyncio

from tests.broker.conftest import Deployment, event, received, seqs


async def test_events_reach_a_subscriber_in_order(deployment: Deployment) -> None:
    channel = await deployment.hub.join("run_a")
    other = await deployment.hub.join("run_b")
    publish = deployment.publisher.publish
    await publish([event("run_a", 1), event("run_b", 1), event("run_a", 2), event("run_a", 3)])
    await publish([event("run_a", 4)])
    await publish([event("run_b", 2), event("run_a", 5), event("run_a", 6)])

    assert await received(channel, 6) == [1, 2, 3, 4, 5, 6]
    assert await received(other, 2) == [1, 2]


async def test_a_publish_right_after_join_is_delivered(deployment: Deployment) -> None:
    """``join`` returns only once the broker delivers the run here: a publish that
    follows it at once is never lost (it would be missed until the next heartbeat)."""
    for i in range(30):
        channel = await deployment.hub.join(f"run_{i}")
        await deployment.publisher.publish([event(f"run_{i}", 1)])
        assert await received(channel, 1, timeout_s=1.0) == [1]


async def test_a_runs_events_reach_only_that_runs_channel(deployment: Deployment) -> None:
    watched = await deployment.hub.join("run_watched")
    await deployment.publisher.publish([event("run_elsewhere", 1), event("run_watched", 1)])
    await deployment.publisher.publish([event("run_elsewhere", 2)])
    await deployment.publisher.publish([event("run_watched", 2)])
    assert await received(watched, 2) == [1, 2]

    late = await deployment.hub.join("run_elsewhere")
    assert seqs(late) == []  # nothing was kept for a run nobody watched


async def test_after_the_last_subscriber_leaves_its_channel_gets_nothing(deployment: Deployment) -> None:
    hub, publish = deployment.hub, deployment.publisher.publish
    first, second = await hub.join("run_a"), await hub.join("run_a")
    assert first is second
    await publish([event("run_a", 1)])
    assert await received(first, 1) == [1]

    hub.leave(first)
    await publish([event("run_a", 2)])
    assert await received(second, 2) == [1, 2]  # one subscriber left: still delivered

    hub.leave(second)
    await publish([event("run_a", 3)])
    sentinel = await hub.join("run_sentinel")
    await publish([event("run_sentinel", 1)])
    await received(sentinel, 1)  # published after run_a's event 3, so that one had its chance
    assert seqs(second) == [1, 2]

    again = await hub.join("run_a")
    assert again is not second
    await publish([event("run_a", 4)])
    assert await received(again, 4, first=4) == [4]  # a new window: followers read 1-3 from the store


async def test_a_cancelled_join_leaves_no_subscriber(deployment: Deployment) -> None:
    hub = deployment.hub
    joining = asyncio.ensure_future(hub.join("run_a"))
    await asyncio.sleep(0)
    joining.cancel()
    await asyncio.gather(joining, return_exceptions=True)
    if not joining.cancelled():  # the join had finished already: leave as its caller would
        hub.leave(joining.result())
    assert hub.subscribers == 0
