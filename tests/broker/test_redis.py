"""``redis://`` beyond the contract: latency between processes, the wire format,
subscriptions only where there are subscribers, and riding out failures.

"Two processes" are two brokers with two hubs in one test, each with its own
connections to this machine's Redis.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest
import redis.asyncio
from redis.exceptions import RedisError

from runyard.broker.base import WAKE
from runyard.broker.redis import RedisBroker
from runyard.broker.redis_wire import decode_events, encode_events
from runyard.events import EventLog, follow
from runyard.events.hub import Hub
from runyard.models import Event, Run, RunStatus
from runyard.store.memory import MemoryStore
from tests.broker.conftest import RecordingHub, event, received, redis_url, require_redis, seqs
from tests.support import free_port

pytestmark = pytest.mark.redis

Open = Callable[..., Awaitable[tuple[RedisBroker, RecordingHub]]]


@pytest.fixture
async def open_broker(prefix: str) -> AsyncIterator[Open]:
    """Opens a broker with a hub of its own (a "process"); all are closed afterwards."""
    require_redis()
    opened: list[RedisBroker] = []

    async def open_(**query: str) -> tuple[RedisBroker, RecordingHub]:
        broker = RedisBroker(redis_url(prefix, **query))
        hub = RecordingHub(broker)
        opened.append(broker)
        await broker.open(hub)
        return broker, hub

    try:
        yield open_
    finally:
        for broker in opened:
            await broker.close()


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 2.0) -> None:
    """Poll ``condition`` until it holds: it looks at Redis, which has no event to wait on."""
    async with asyncio.timeout(timeout_s):
        for _ in itertools.count():
            if await condition():
                return
            await asyncio.sleep(0.002)


async def subscribers(admin: redis.asyncio.Redis, channel: str) -> int:
    [(_, count)] = await admin.pubsub_numsub(channel)
    return int(count)


async def clients(admin: redis.asyncio.Redis, name: str, type: str = "pubsub") -> list[str]:
    """The ids of the connections named ``name`` of the given type (``pubsub``: subscribed)."""
    return [client["id"] for client in await admin.client_list(_type=type) if client.get("name") == name]


async def test_events_reach_another_process_within_milliseconds(open_broker: Open) -> None:
    a, _ = await open_broker()
    _, hub_b = await open_broker()
    channel = await hub_b.join("run_a")
    latencies = []
    for seq in range(1, 1001):
        version = channel.version
        started = time.perf_counter()
        await a.publish([event("run_a", seq)])
        await channel.changed_since(version)
        latencies.append(time.perf_counter() - started)
    assert [seq for seq, _, _ in channel.after(998, 10) or []] == [999, 1000]

    cuts = statistics.quantiles(latencies, n=100)
    p50, p99 = cuts[49] * 1000, cuts[98] * 1000
    print(f"\nredis:// publish on A -> B's hub, 1,000 events: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    assert p99 < 50, f"p99 {p99:.1f} ms"  # the target under load; unloaded it is well below 1 ms


async def test_event_data_arrives_byte_for_byte(open_broker: Open) -> None:
    a, _ = await open_broker()
    _, hub_b = await open_broker()
    channel = await hub_b.join("run_a")
    payloads = [
        '{"text":"héllo wörld — 日本語 🎉"}'.encode(),
        b'{"escaped":"h\\u00e9llo \\ud83c\\udf89","quote":"\\"","backslash":"\\\\","nl":"a\\nb"}',
        '{"separators":"\u2028\u2029","nul":"\\u0000","tab":"\\t"}'.encode(),
        b'{"float":1.0000000000000002,"big":12345678901234567890,"neg":-0.0,"exp":1e-7}',
        b'{ "spaced" : [ 1 , 2 ] }',  # whitespace that a re-encoding would drop
        b'"just a string"',
        b"null",
        ('{"pad":"' + "é" * 32_000 + "🎉" * 100 + '"}').encode(),  # ~64 KiB
    ]
    sent = [
        Event("run_a", i, "custom.type-1", data, 1_700_000_000.123456 + i / 7) for i, data in enumerate(payloads, 1)
    ]
    await a.publish(sent[:3])
    await a.publish(sent[3:])
    await received(channel, len(sent))

    assert hub_b.delivered == sent
    assert [frame for _, _, frame in channel.after(0, 100) or []] == [
        b"id: %d\nevent: custom.type-1\ndata: %s\n\n" % (e.seq, e.to_json()) for e in sent
    ]


def test_the_wire_format_is_one_json_array_per_run() -> None:
    events = [event("run_a", 1), event("run_a", 2, b'{"x":"\xc3\xa9"}')]
    message = encode_events("origin1", events)
    assert orjson.loads(message) == [
        "origin1",
        "run_a",
        [[1, "tick", 1700000000.001, '{"i":1}'], [2, "tick", 1700000000.002, '{"x":"é"}']],
    ]
    assert decode_events(message) == ("origin1", events)


async def test_one_message_per_run_per_batch_and_no_echo(open_broker: Open) -> None:
    a, hub_a = await open_broker()
    c, _ = await open_broker()
    _, hub_b = await open_broker()
    a_channel = await hub_a.join("run_a")
    b_channel = await hub_b.join("run_a")
    batch = [event("run_a", 1), event("run_b", 1), event("run_a", 2), event("run_a", 3), event("run_b", 2)]
    await a.publish(batch)
    assert await received(b_channel, 3) == [1, 2, 3]
    assert hub_b.batches == [[batch[0], batch[2], batch[3]]]  # one message, in order, only the watched run

    # A's hub had the batch at once; the copy coming back through Redis is dropped.
    sentinel = await hub_a.join("run_sentinel")
    await c.publish([event("run_sentinel", 1)])  # reaches A after A's own message
    await received(sentinel, 1)
    assert hub_a.batches == [batch, [event("run_sentinel", 1)]]
    assert seqs(a_channel) == [1, 2, 3]


async def test_subscribed_only_while_a_run_has_subscribers(
    open_broker: Open, admin: redis.asyncio.Redis, prefix: str
) -> None:
    a, _ = await open_broker()
    _, hub_b = await open_broker()
    channel_name = f"{prefix}events:run_a"
    assert await subscribers(admin, channel_name) == 0

    first = await hub_b.join("run_a")
    assert await subscribers(admin, channel_name) == 1  # confirmed before join returned
    second = await hub_b.join("run_a")
    hub_b.leave(first)
    await asyncio.sleep(0.05)
    assert await subscribers(admin, channel_name) == 1

    hub_b.leave(second)

    async def unsubscribed() -> bool:
        return await subscribers(admin, channel_name) == 0

    await until(unsubscribed)
    await a.publish([event("run_a", 1)])
    sentinel = await hub_b.join("run_sentinel")
    await a.publish([event("run_sentinel", 1)])
    await received(sentinel, 1)
    assert [e.run_id for e in hub_b.delivered] == ["run_sentinel"]  # run_a's event never reached B


async def test_many_joins_and_leaves_settle_on_the_runs_still_watched(
    open_broker: Open, admin: redis.asyncio.Redis, prefix: str
) -> None:
    """Unsubscribing is batched and lazy; a run left and joined again in between
    must stay subscribed."""
    a, _ = await open_broker()
    _, hub_b = await open_broker()
    channels = [await hub_b.join(f"run_{i}") for i in range(50)]
    for channel in channels:
        hub_b.leave(channel)
    kept = [await hub_b.join(f"run_{i}") for i in range(0, 50, 5)]  # rejoined before the batch went out

    async def settled() -> bool:
        counts = [await subscribers(admin, f"{prefix}events:run_{i}") for i in range(50)]
        return counts == [1 if i % 5 == 0 else 0 for i in range(50)]

    await until(settled)
    for i, channel in zip(range(0, 50, 5), kept, strict=True):
        await a.publish([event(f"run_{i}", 1)])
        assert await received(channel, 1) == [1]


async def test_runs_joined_together_are_subscribed_with_one_command(
    open_broker: Open, admin: redis.asyncio.Redis, prefix: str
) -> None:
    """Streams opening together (a ramp) cost Redis one SUBSCRIBE, not one per
    run; each join still returns only once its run's subscription holds."""
    a, _ = await open_broker()
    name = f"{prefix}b"
    _, hub_b = await open_broker(client_name=name)
    [subscriber] = [c["addr"] for c in await admin.client_list(_type="pubsub") if c.get("name") == name]
    wanted = {f"{prefix}events:run_{i}" for i in range(50)}
    subscribes: list[list[str]] = []
    async with admin.monitor() as monitor:
        channels = await asyncio.gather(*(hub_b.join(f"run_{i}") for i in range(50)))
        for i in range(50):
            assert await subscribers(admin, f"{prefix}events:run_{i}") == 1
        async with asyncio.timeout(5):
            while {channel for command in subscribes for channel in command} != wanted:
                seen = await monitor.next_command()
                if f"{seen['client_address']}:{seen['client_port']}" == subscriber:
                    verb, *names = seen["command"].split()
                    if verb.upper() == "SUBSCRIBE":
                        subscribes.append(names)
    assert len(subscribes) == 1
    await a.publish([event("run_7", 1)])
    assert await received(channels[7], 1) == [1]


async def follower(store: MemoryStore, hub: Hub, run_id: str) -> list[int]:
    """Every seq a stream of the run yields, with a heartbeat too long to matter."""
    seen: list[int] = []
    async for batch in follow(store, hub, run_id, 0, heartbeat_s=60):
        seen.extend(seq for seq, _, _ in batch)
    return seen


async def test_a_dropped_subscriber_connection_costs_no_event(
    open_broker: Open, admin: redis.asyncio.Redis, prefix: str
) -> None:
    """The subscriber connection is killed (``CLIENT KILL``) while a run emits: the
    reader reconnects, subscribes again and resyncs, so a stream on the other
    process gets every event once, without waiting for a heartbeat."""
    store = MemoryStore()
    await store.open()
    await store.create_run(Run("run_a", "ses_a", "alice", "ticker", RunStatus.RUNNING, {}, time.time()))
    a, _ = await open_broker()
    name = f"{prefix}b"
    _, hub_b = await open_broker(client_name=name)
    log = EventLog(store, a)
    await log.start()
    try:
        stream = asyncio.create_task(follower(store, hub_b, "run_a"))

        async def subscribed() -> bool:
            return bool(await clients(admin, name))

        await until(subscribed)
        [before] = await clients(admin, name)
        for i in range(600):
            if i == 200:
                # Only this test's subscriber: other suites may share this Redis.
                await admin.execute_command("CLIENT", "KILL", "ID", before, "TYPE", "pubsub")
            elif i == 400:
                [after] = await clients(admin, name)
                assert after != before  # it did reconnect (and subscribe)
            await log.append("run_a", "tick", {"i": i})
            await asyncio.sleep(0.0005)
        await log.append_group("run_a", [("end", {"status": "succeeded"})])
        async with asyncio.timeout(10):  # far less than the heartbeat
            seen = await stream
    finally:
        await log.stop()
        await store.close()

    assert seen == list(range(1, 602))
    through_redis = {e.seq for e in hub_b.delivered}
    assert through_redis < set(seen)  # events went by while it was away: the store had them


async def test_a_killed_publishing_connection_loses_nothing(
    open_broker: Open, admin: redis.asyncio.Redis, prefix: str
) -> None:
    name = f"{prefix}a"
    a, _ = await open_broker(client_name=name)
    _, hub_b = await open_broker()
    channel = await hub_b.join("run_a")
    await a.publish([event("run_a", 1)])
    await received(channel, 1)
    for client in await clients(admin, name, type="normal"):  # the pooled publishing one among them
        await admin.execute_command("CLIENT", "KILL", "ID", client)
    await a.publish([event("run_a", 2)])
    assert await received(channel, 2) == [1, 2]  # one immediate retry, on a new connection


async def test_unreachable_redis_fails_ping_fast_and_never_the_publisher(prefix: str) -> None:
    broker = RedisBroker(f"redis://127.0.0.1:{free_port()}/0?prefix={prefix}")
    hub = RecordingHub(broker)
    started = time.monotonic()
    await broker.open(hub)  # carries on without Redis; the reader keeps trying
    try:
        channel = await hub.join("run_a")  # does not wait for a connection that is known to be down
        with pytest.raises(RedisError):
            await broker.ping()
        for seq in range(1, 51):
            await broker.publish([event("run_a", seq)])
        assert seqs(channel) == list(range(1, 51))  # this process's subscribers are served all the same
        assert time.monotonic() - started < 2
    finally:
        await broker.close()


async def test_publishing_resends_each_runs_newest_event_once_redis_answers(open_broker: Open) -> None:
    a, _ = await open_broker()
    _, hub_b = await open_broker()
    channel = await hub_b.join("run_a")
    await a.publish([event("run_a", 1)])
    await received(channel, 1)

    pipeline = a._client.pipeline

    def failing(*args: object, **kwargs: object) -> object:
        raise redis.exceptions.ConnectionError("Redis is away")

    a._client.pipeline = failing  # type: ignore[method-assign]
    try:
        await a.publish([event("run_a", 2), event("run_a", 3)])
        await a.publish([event("run_a", 4)])  # within the back-off: not even tried
    finally:
        a._client.pipeline = pipeline  # type: ignore[method-assign]
    await asyncio.sleep(0.2)  # past the back-off
    await a.publish([event("run_b", 1)])  # the next batch of any run carries run_a's newest event
    assert await received(channel, 4, first=4) == [4]  # a gap: run_a's followers read 2-4 from the store


async def test_wake_ups_asked_for_at_once_reach_other_processes_folded_and_none_is_lost(prefix: str) -> None:
    """A group commit answers dozens of creations at once, each of which asks for
    a wake-up: the others get a few, not one each, and the last ask is always
    followed by one they receive (none is folded into a message sent before it)."""
    require_redis()
    heard: dict[str, list[str]] = {"sender": [], "other": []}
    sender, other = RedisBroker(redis_url(prefix)), RedisBroker(redis_url(prefix))

    async def other_heard() -> bool:
        return bool(heard["other"])

    await sender.open(Hub(sender.watcher), lambda kind, _: heard["sender"].append(kind))
    await other.open(Hub(other.watcher), lambda kind, _: heard["other"].append(kind))
    try:
        await asyncio.sleep(0.05)
        heard["sender"].clear()  # each woke its own workers on subscribing
        heard["other"].clear()
        await asyncio.gather(*(sender.signal(WAKE) for _ in range(50)))
        assert heard["sender"] == [WAKE] * 50  # this process's own workers: at once, every time
        await until(other_heard)
        await asyncio.sleep(0.2)  # anything still on its way arrives
        assert 1 <= len(heard["other"]) <= 2
        heard["other"].clear()
        await sender.signal(WAKE)  # asked for after the others were sent: sent too
        await until(other_heard)
        assert heard["other"] == [WAKE]
    finally:
        await sender.close()
        await other.close()
