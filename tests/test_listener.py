"""A follower's wait on its channel (``Listener``): the next delivery, or its heartbeat after silence."""

from __future__ import annotations

import asyncio

from runyard.events.hub import Listener, RunChannel
from runyard.models import Event

QUIET_S = 0.2


def tick(seq: int) -> Event:
    return Event("run_a", seq, "tick", b'{"i":%d}' % seq, 1_700_000_000.0)


async def test_a_wait_ends_with_the_channels_next_delivery() -> None:
    channel = RunChannel("run_a")
    listener = Listener(channel, QUIET_S)
    loop = asyncio.get_running_loop()
    loop.call_later(0.02, channel.deliver, [tick(1)])
    started = loop.time()
    assert await listener.wait(channel.version) is True
    assert loop.time() - started < QUIET_S
    listener.close()


async def test_a_wait_returns_at_once_when_the_channel_changed_since_the_version_read() -> None:
    channel = RunChannel("run_a")
    listener = Listener(channel, QUIET_S)
    version = channel.version
    channel.deliver([tick(1)])  # while the follower was reading the window or the store
    assert await asyncio.wait_for(listener.wait(version), 0.01) is True
    listener.close()


async def test_silence_ends_a_wait_after_quiet_s_and_not_before() -> None:
    channel = RunChannel("run_a")
    listener = Listener(channel, QUIET_S)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await listener.wait(channel.version) is False
    assert QUIET_S <= loop.time() - started < QUIET_S + 0.1
    listener.close()


async def test_silence_counts_from_what_the_follower_last_sent_not_from_each_wait() -> None:
    channel = RunChannel("run_a")
    listener = Listener(channel, QUIET_S)
    loop = asyncio.get_running_loop()
    listener.spoke()
    spoke_at = loop.time()
    loop.call_later(QUIET_S * 0.6, channel.deliver, [tick(1)])  # a wake-up the follower sends nothing for
    assert await listener.wait(channel.version) is True
    assert await listener.wait(channel.version) is False
    assert QUIET_S <= loop.time() - spoke_at < QUIET_S * 1.5


async def test_sending_moves_the_heartbeat_later() -> None:
    channel = RunChannel("run_a")
    listener = Listener(channel, QUIET_S)
    loop = asyncio.get_running_loop()
    assert await listener.wait(channel.version) is False
    listener.spoke()  # the heartbeat
    for seq in range(1, 4):  # a delivery, sent, every 0.1 s: never QUIET_S of silence
        loop.call_later(QUIET_S / 2, channel.deliver, [tick(seq)])
        assert await listener.wait(channel.version) is True
        listener.spoke()
    listener.close()


async def test_a_cancelled_wait_leaves_no_waiter_and_a_closed_listener_no_timer() -> None:
    channel = RunChannel("run_a")
    listener = Listener(channel, QUIET_S)
    waiting = asyncio.create_task(listener.wait(channel.version))
    await asyncio.sleep(0.01)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert channel._waiters == {}
    listener.close()
    assert listener._timer is None
    channel.deliver([tick(1)])  # wakes nobody, fails nothing
    assert channel.version == 1


async def test_every_listener_of_a_channel_is_woken_by_one_delivery() -> None:
    channel = RunChannel("run_a")
    listeners = [Listener(channel, QUIET_S) for _ in range(50)]
    version = channel.version
    waits = [asyncio.create_task(listener.wait(version)) for listener in listeners]
    await asyncio.sleep(0.01)
    channel.deliver([tick(1)])
    assert await asyncio.wait_for(asyncio.gather(*waits), 0.1) == [True] * 50
    for listener in listeners:
        listener.close()
