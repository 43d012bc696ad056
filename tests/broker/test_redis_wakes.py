"""``redis://``: the wake-up of a queued run goes to one worker, not to every one.

A "process" is a broker opened with its own hub and a recorder of the signals
it hands its worker; a "worker waiting" is a ``wakes.take`` under way there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio

from runyard.broker.base import WAKE
from runyard.broker.redis import RedisBroker
from runyard.broker.redis_wakes import CHOICES, TOKENS_KEPT, RedisWakeQueue
from tests.broker.conftest import RecordingHub, redis_url, require_redis
from tests.support import free_port

pytestmark = pytest.mark.redis


class Process:
    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self.signals: list[tuple[str, str]] = []
        self.heard = asyncio.Event()

    def on_signal(self, kind: str, run_id: str) -> None:
        self.signals.append((kind, run_id))
        self.heard.set()

    @property
    def wakes(self) -> RedisWakeQueue:
        assert isinstance(self.broker.wakes, RedisWakeQueue)
        return self.broker.wakes

    def waiting(self, *pipelines: str, timeout_s: float = 2.0) -> asyncio.Task[bool]:
        return asyncio.create_task(self.wakes.take(list(pipelines), timeout_s))


Start = Callable[[], Awaitable[Process]]


@pytest.fixture
async def start(prefix: str) -> AsyncIterator[Start]:
    require_redis()
    started: list[Process] = []

    async def start_() -> Process:
        process = Process(RedisBroker(redis_url(prefix)))
        await process.broker.open(RecordingHub(process.broker), process.on_signal)
        started.append(process)
        # the wake-up every (re)subscription gives its worker
        await asyncio.wait_for(process.heard.wait(), 2.0)
        process.signals.clear()
        return process

    try:
        yield start_
    finally:
        for process in started:
            await process.broker.close()


async def settled() -> None:
    """Time for a wake-up that should not come to come anyway."""
    await asyncio.sleep(0.3)


async def test_a_queued_run_wakes_two_of_the_workers_waiting_for_its_pipeline(start: Start) -> None:
    """Two race for it (the one least busy claims it first); the others sleep on."""
    api, *workers = [await start() for _ in range(4)]
    takes = [worker.waiting("chat") for worker in workers]
    await asyncio.sleep(0.1)  # all are waiting in Redis

    await api.broker.queued("chat")
    await asyncio.sleep(0.3)

    assert [task.result() for task in takes if task.done()] == [True] * CHOICES == [True, True]
    for task in takes:
        task.cancel()


async def test_each_wake_up_wakes_a_worker_in_turn(start: Start) -> None:
    api, first, second = await start(), await start(), await start()
    takes = [first.waiting("chat"), second.waiting("chat")]
    await asyncio.sleep(0.1)

    await api.wakes.put(["chat"])
    await api.wakes.put(["chat"])

    assert await asyncio.wait_for(asyncio.gather(*takes), 2.0) == [True, True]


async def test_a_worker_waits_only_for_the_pipelines_it_serves(start: Start) -> None:
    api, research_worker = await start(), await start()
    take = research_worker.waiting("research", timeout_s=0.5)
    await asyncio.sleep(0.1)

    await api.broker.queued("chat")

    assert await take is False
    chat_worker = await start()
    assert await chat_worker.wakes.take(["research", "chat"], 1.0) is True, "the tokens wait for a chat worker"


async def test_a_wake_up_for_any_worker_is_taken_by_a_worker_of_any_pipeline(start: Start) -> None:
    api, worker = await start(), await start()
    take = worker.waiting("research")
    await asyncio.sleep(0.1)

    api.wakes.ask(None)

    assert await take is True
    assert await worker.wakes.take(["research"], 0.2) is False, "a run's end gives one wake-up"


async def test_the_wake_ups_given_while_no_worker_waits_are_taken_at_once_by_the_next_to_wait(start: Start) -> None:
    """One claim answers them all: taken one by one, a lone worker claimed twice per queued run."""
    api, worker = await start(), await start()
    await api.broker.queued("chat")  # CHOICES tokens
    await settled()

    assert [await worker.wakes.take(["chat"], 0.2) for _ in range(2)] == [True, False]


async def test_the_process_queueing_a_run_wakes_its_own_worker_at_once(start: Start) -> None:
    process = await start()
    await process.broker.queued("chat")
    assert process.signals == [(WAKE, "")]


async def test_a_process_whose_own_worker_waits_gives_no_wake_up_to_others(
    start: Start, admin: redis.asyncio.Redis, prefix: str
) -> None:
    process, other = await start(), await start()
    own = process.waiting("chat", timeout_s=1.0)
    elsewhere = other.waiting("chat", timeout_s=1.0)
    await asyncio.sleep(0.1)

    await process.broker.queued("chat")

    assert process.signals == [(WAKE, "")], "its own worker looks at once"
    assert await own is False and await elsewhere is False, "no worker is woken twice for the run"
    assert await admin.llen(f"{prefix}wake:chat") == 0


async def test_wake_ups_asked_for_while_one_is_on_its_way_fold_into_one_more(
    start: Start, admin: redis.asyncio.Redis, prefix: str
) -> None:
    api = await start()
    await api.broker.queued("chat")
    await asyncio.sleep(0)  # its push is on its way
    for _ in range(49):
        await api.broker.queued("chat")
    await settled()

    assert await admin.llen(f"{prefix}wake:chat") == 2 * CHOICES


async def test_a_list_keeps_a_few_wake_ups_and_expires_when_nobody_takes_them(
    start: Start, admin: redis.asyncio.Redis, prefix: str
) -> None:
    api = await start()
    for _ in range(TOKENS_KEPT + 5):
        await api.wakes.put(["chat"])

    assert await admin.llen(f"{prefix}wake:chat") == TOKENS_KEPT
    assert 0 < await admin.pttl(f"{prefix}wake:chat") <= 60_000


async def test_a_take_cancelled_as_its_worker_drains_leaves_redis_as_it_was(start: Start) -> None:
    api, draining, other = await start(), await start(), await start()
    take = draining.waiting("chat", timeout_s=5.0)
    await asyncio.sleep(0.1)
    take.cancel()
    with pytest.raises(asyncio.CancelledError):
        await take
    await draining.broker.close()

    await api.wakes.put(["chat"])
    assert await other.wakes.take(["chat"], 1.0) is True, "the cancelled take took nothing"


async def test_without_redis_a_take_waits_its_time_and_a_put_is_lost_quietly() -> None:
    broker = RedisBroker(f"redis://127.0.0.1:{free_port()}/0")
    try:
        assert broker.wakes is not None
        await broker.wakes.put(["chat"])
        started = asyncio.get_running_loop().time()
        assert await broker.wakes.take(["chat"], 0.2) is False
        assert asyncio.get_running_loop().time() - started >= 0.2, "no busy loop while Redis is down"
    finally:
        await broker.close()
