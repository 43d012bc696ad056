"""A fleet of API and worker processes on PostgreSQL and Redis behaves as one server:
any API process serves any run, any worker executes it, and no process's death,
stall or restart of Redis loses, repeats or reorders an event."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fleet.conftest import Fleet, RedisServer
from tests.remote import FINISHED, OWNER, create, snapshot, stored_events, wait_until
from tests.sse_reader import assert_gap_free, frames, read_events
from tests.support import ServerProcess

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def stream(api: ServerProcess, run_id: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=api.url, headers=OWNER, timeout=60) as client:
            return await read_events(client, run_id)

    return asyncio.run(read())


def assert_one_clean_log(events: list[dict[str, Any]]) -> None:
    assert_gap_free(events)
    assert [event["type"] for event in events].count("end") == 1 and events[-1]["type"] == "end"


@pytest.fixture
def two_by_two(fleet: Fleet) -> Iterator[tuple[list[ServerProcess], list[ServerProcess]]]:
    """Two API processes and two workers."""
    first_api, second_api, first_worker, second_worker = fleet.start_all("api", "api", "worker", "worker")
    yield [first_api, second_api], [first_worker, second_worker]


# -- one deployment, many processes --------------------------------------------------


def test_a_run_created_on_one_api_process_is_streamed_and_read_on_another(
    two_by_two: tuple[list[ServerProcess], list[ServerProcess]],
) -> None:
    (a, b), _ = two_by_two
    run_id = create(a.url, "ticker", {"marker": "across", "count": 50, "interval_ms": 5})
    events = stream(b, run_id)
    assert_one_clean_log(events)
    assert [e["data"]["marker"] for e in events if e["type"] == "tick"] == ["across"] * 50
    assert snapshot(b.url, run_id) == snapshot(a.url, run_id)
    assert snapshot(b.url, run_id)["status"] == "succeeded"
    assert stored_events(b.url, run_id) == events


def test_api_processes_never_execute_runs_and_workers_serve_no_api(
    fleet: Fleet, two_by_two: tuple[list[ServerProcess], list[ServerProcess]]
) -> None:
    (a, _), workers = two_by_two
    # long enough to be seen running on a loaded machine (a 1 s nap ended between two polls in CI)
    runs = [create(a.url, "nap", {"seconds": 30}) for _ in range(4)]
    holders = set()
    for run_id in runs:
        wait_until(a.url, run_id, {"running"})
        holders.add(fleet.worker_of(run_id))
    assert holders <= set(workers)
    assert httpx.get(f"{workers[0].url}/v1/runs/{runs[0]}", headers=OWNER).status_code == 404
    assert httpx.get(f"{workers[0].url}/readyz").json()["checks"] == {"store": "ok", "broker": "ok"}
    for run_id in runs:
        httpx.post(f"{a.url}/v1/runs/{run_id}/cancel", headers=OWNER)


def test_100_concurrent_runs_over_every_process_have_no_gaps_and_no_crosstalk(
    two_by_two: tuple[list[ServerProcess], list[ServerProcess]],
) -> None:
    apis, _ = two_by_two

    async def one(i: int, clients: list[httpx.AsyncClient]) -> tuple[str, list[dict[str, Any]]]:
        creator, reader = clients[i % 2], clients[(i + 1) % 2]
        marker = f"user-{i}"
        body = {"pipeline": "ticker", "input": {"marker": marker, "count": 20, "interval_ms": 10}}
        response = await creator.post("/v1/runs", json=body)
        assert response.status_code == 201, response.text
        return marker, await read_events(reader, response.json()["run_id"])

    async def everyone() -> list[tuple[str, list[dict[str, Any]]]]:
        limits = httpx.Limits(max_connections=200)
        clients = [httpx.AsyncClient(base_url=api.url, headers=OWNER, timeout=60, limits=limits) for api in apis]
        try:
            return await asyncio.gather(*(one(i, clients) for i in range(100)))
        finally:
            for client in clients:
                await client.aclose()

    for marker, events in asyncio.run(everyone()):
        assert_one_clean_log(events)
        ticks = [e["data"] for e in events if e["type"] == "tick"]
        assert [(t["marker"], t["i"]) for t in ticks] == [(marker, i) for i in range(20)]
        assert events[-1]["data"]["status"] == "succeeded"


def test_a_cancel_sent_to_one_api_process_stops_the_run_on_its_worker_within_a_second(
    two_by_two: tuple[list[ServerProcess], list[ServerProcess]],
) -> None:
    (a, b), _ = two_by_two
    run_id = create(a.url, "nap", {"seconds": 60})
    wait_until(a.url, run_id, {"running"})
    asked = time.monotonic()
    assert httpx.post(f"{b.url}/v1/runs/{run_id}/cancel", headers=OWNER).status_code == 202
    assert wait_until(a.url, run_id, FINISHED, timeout=5)["status"] == "cancelled"
    assert time.monotonic() - asked < 1.0
    assert_one_clean_log(stored_events(a.url, run_id))


def test_a_sessions_runs_execute_one_at_a_time_in_order_across_workers(
    two_by_two: tuple[list[ServerProcess], list[ServerProcess]],
) -> None:
    (a, b), _ = two_by_two
    first = httpx.post(f"{a.url}/v1/runs", json={"pipeline": "nap", "input": {"seconds": 0.2}}, headers=OWNER)
    session_id = first.json()["session_id"]
    runs = [first.json()["run_id"]]
    for i in range(5):
        body = {"pipeline": "nap", "input": {"seconds": 0.05}, "session_id": session_id}
        runs.append(httpx.post(f"{(a, b)[i % 2].url}/v1/runs", json=body, headers=OWNER).json()["run_id"])
    finished = [wait_until(b.url, run_id, FINISHED) for run_id in runs]
    assert all(run["status"] == "succeeded" for run in finished)
    for earlier, later in itertools.pairwise(finished):
        assert earlier["finished_at"] <= later["started_at"], "a session's runs overlapped"


# -- processes that die, stall or stop ------------------------------------------------


@pytest.mark.parametrize(
    ("pipeline", "status", "code", "attempt"),
    [("nap", "failed", "worker_lost", 1), ("nap_retry", "succeeded", None, 2)],
    ids=["no-retries-fails-worker-lost", "retries-runs-the-next-attempt-elsewhere"],
)
def test_a_worker_killed_mid_run_is_recovered_by_another_per_the_retry_policy(
    fleet: Fleet, pipeline: str, status: str, code: str | None, attempt: int
) -> None:
    api = fleet.start("api")
    fleet.start("worker")
    fleet.start("worker")
    run_id = create(api.url, pipeline, {"seconds": 1.0})
    wait_until(api.url, run_id, {"running"})
    fleet.worker_of(run_id).kill()
    final = wait_until(api.url, run_id, FINISHED, timeout=20)  # the lease is 2 s
    assert (final["status"], (final["error"] or {}).get("code"), final["attempt"]) == (status, code, attempt)
    assert_one_clean_log(stored_events(api.url, run_id))


def test_a_client_whose_api_process_is_killed_resumes_on_another_without_gap_or_duplicate(fleet: Fleet) -> None:
    a, b = fleet.start("api"), fleet.start("api")
    fleet.start("worker")
    run_id = create(a.url, "ticker", {"marker": "survivor", "count": 150, "interval_ms": 20})

    async def read_through_the_crash() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        async with httpx.AsyncClient(base_url=a.url, headers=OWNER, timeout=30) as client:
            with pytest.raises(httpx.HTTPError):
                async with client.stream("GET", f"/v1/runs/{run_id}/stream") as response:
                    async for frame in frames(response):
                        if "id" in frame:
                            seen.append(frame["data"])
                            if len(seen) == 20:
                                a.kill()  # mid-stream: the connection breaks under the client
        assert len(seen) >= 20
        async with httpx.AsyncClient(base_url=b.url, headers=OWNER, timeout=30) as client:
            return seen + await read_events(client, run_id, last_event_id=seen[-1]["seq"])

    events = asyncio.run(read_through_the_crash())
    assert_one_clean_log(events)
    assert [e["data"]["i"] for e in events if e["type"] == "tick"] == list(range(150))


def test_a_redis_restart_mid_stream_loses_no_event(database: str, own_redis: RedisServer) -> None:
    fleet = Fleet(database, f"redis://127.0.0.1:{own_redis.port}/0", {"RUNYARD_LEASE_S": "2"})
    try:
        api, _ = fleet.start("api"), fleet.start("worker")
        run_id = create(api.url, "ticker", {"marker": "storm", "count": 200, "interval_ms": 15})

        async def read_across_the_restart() -> list[dict[str, Any]]:
            async with httpx.AsyncClient(base_url=api.url, headers=OWNER, timeout=60) as client:
                first = await read_events(client, run_id, stop_after=30)
                own_redis.kill()
                await asyncio.sleep(0.5)
                own_redis.start()
                return first + await read_events(client, run_id, last_event_id=first[-1]["seq"])

        events = asyncio.run(read_across_the_restart())
        assert_one_clean_log(events)
        assert [e["data"]["i"] for e in events if e["type"] == "tick"] == list(range(200))
        # wake-ups flow again: a run created now is claimed and finishes
        after = create(api.url, "nap", {"seconds": 0.01})
        assert wait_until(api.url, after, FINISHED, timeout=10)["status"] == "succeeded"
    finally:
        fleet.stop()


def test_a_worker_stalled_past_its_lease_writes_nothing_once_its_run_is_recovered(fleet: Fleet) -> None:
    api = fleet.start("api")
    fleet.start("worker")
    fleet.start("worker")
    run_id = create(api.url, "nap_retry", {"seconds": 3})
    wait_until(api.url, run_id, {"running"})
    stalled = fleet.worker_of(run_id)
    assert stalled.proc is not None
    stalled.proc.send_signal(signal.SIGSTOP)  # its event loop stops, with the run in hand
    try:
        deadline = time.monotonic() + 60  # a lease of 2 s; the rest is for a loaded machine
        while not (snapshot(api.url, run_id)["attempt"] == 2 and snapshot(api.url, run_id)["status"] == "running"):
            assert time.monotonic() < deadline, "the run was never recovered"
            time.sleep(0.05)
    finally:
        stalled.proc.send_signal(signal.SIGCONT)  # wakes up believing it still runs attempt 1
    final = wait_until(api.url, run_id, FINISHED, timeout=20)
    assert (final["status"], final["attempt"]) == ("succeeded", 2)
    events = stored_events(api.url, run_id)
    assert_one_clean_log(events)
    requeued = next(i for i, e in enumerate(events) if e["type"] == "status" and e["data"]["status"] == "queued")
    assert all(e["data"].get("attempt") == 2 for e in events[requeued + 1 :] if e["type"] == "napping")
    assert [e["data"]["status"] for e in events if e["type"] == "status"] == [
        "running",
        "queued",
        "running",
        "succeeded",
    ]


def test_sigterm_drains_a_worker_and_leaves_nothing_running(fleet: Fleet) -> None:
    api = fleet.start("api")
    draining = fleet.start("worker", RUNYARD_DRAIN_S="1.5")
    short = create(api.url, "nap", {"seconds": 0.5})  # finishes within the drain
    long = create(api.url, "nap_retry", {"seconds": 30})  # handed back after it
    wait_until(api.url, short, {"running"})
    wait_until(api.url, long, {"running"})
    assert draining.proc is not None
    draining.proc.send_signal(signal.SIGTERM)
    draining.proc.wait(timeout=15)
    assert wait_until(api.url, short, FINISHED)["status"] == "succeeded"
    handed_back = snapshot(api.url, long)
    assert (handed_back["status"], handed_back["attempt"]) == ("queued", 1), "a drain uses up no retry"
    fleet.start("worker")  # the next worker takes it
    assert wait_until(api.url, long, {"running"})["attempt"] == 1
    held = fleet.query("SELECT count(*) FROM runs WHERE worker_id LIKE $1", f"%:{draining.proc.pid}:%")
    assert held == [(0,)], "the drained worker still holds a run"


# -- admission across processes --------------------------------------------------------


def test_quota_and_idempotency_hold_when_creations_race_over_two_api_processes(fleet: Fleet) -> None:
    apis = [fleet.start("api", RUNYARD_QUOTA_RUNS="5"), fleet.start("api", RUNYARD_QUOTA_RUNS="5")]
    body = {"pipeline": "nap", "input": {"seconds": 0.01}}

    async def race(owner: str, requests: int, key: str | None = None) -> list[httpx.Response]:
        headers = {"X-Client-Id": owner, **({"Idempotency-Key": key} if key else {})}
        clients = [httpx.AsyncClient(base_url=api.url, headers=headers, timeout=30) for api in apis]
        try:
            return await asyncio.gather(*(clients[i % 2].post("/v1/runs", json=body) for i in range(requests)))
        finally:
            for client in clients:
                await client.aclose()

    quota_race = asyncio.run(race("racer", 30))
    assert sorted(r.status_code for r in quota_race) == [201] * 5 + [429] * 25
    assert {r.json()["error"]["code"] for r in quota_race if r.status_code == 429} == {"quota_exceeded"}
    key_race = asyncio.run(race("keyholder", 20, key="one-order"))
    assert {r.status_code for r in key_race} == {201}
    assert len({r.json()["run_id"] for r in key_race}) == 1
    (count,) = fleet.query("SELECT count(*) FROM runs WHERE owner = $1", "keyholder")
    assert count[0] == 1


# -- limits shared by the fleet ---------------------------------------------------------


def test_a_limits_cap_holds_across_worker_processes(fleet: Fleet) -> None:
    api = fleet.start("api")
    fleet.start_all("worker", "worker", RUNYARD_MAX_CONCURRENT_RUNS="2")
    # test-api: concurrency=1. The first run holds the permit 3 s: the worker that
    # claimed it is full (it and a run waiting for the permit), so the other worker
    # claims the next ones, however fast the first would have taken them all.
    runs = [create(api.url, "limited", {"hold": 3 if i == 0 else 0.15}) for i in range(8)]
    finished = [wait_until(api.url, run_id, FINISHED) for run_id in runs]
    assert {run["status"] for run in finished} == {"succeeded"}
    assert len({run["output"]["pid"] for run in finished}) == 2, "both workers executed runs"
    held = []
    for run_id in runs:
        events = {e["type"]: e["ts"] for e in stored_events(api.url, run_id)}
        held.append((events["got_permit"], events["releasing"]))
    held.sort()
    for (_, released), (acquired, _) in itertools.pairwise(held):
        assert released <= acquired, "two runs held the single permit at once"


def test_the_creation_rate_is_counted_once_for_the_whole_fleet(fleet: Fleet) -> None:
    apis = [fleet.start("api", RUNYARD_RATE_LIMIT="4/minute"), fleet.start("api", RUNYARD_RATE_LIMIT="4/minute")]
    body = {"pipeline": "nap", "input": {"seconds": 0.01}}
    answers = [httpx.post(f"{apis[i % 2].url}/v1/runs", json=body, headers=OWNER) for i in range(10)]
    assert [a.status_code for a in answers].count(201) == 4
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 429} == {"rate_limited"}
    assert all(1 <= int(a.headers["retry-after"]) <= 60 for a in answers if a.status_code == 429)


def test_a_drain_longer_than_the_lease_never_runs_a_run_on_two_workers_at_once(fleet: Fleet) -> None:
    """Issue 10: with RUNYARD_DRAIN_S=8 and RUNYARD_LEASE_S=2 a draining worker
    stopped renewing its leases, so a 6 s run it went on executing was recovered
    and executed again by another worker, both at once."""
    api = fleet.start("api")
    fleet.start("worker", RUNYARD_DRAIN_S="8")  # the fleet's lease is 2 s
    fleet.start("worker", RUNYARD_DRAIN_S="8")
    run_id = create(api.url, "nap_retry", {"seconds": 6})
    wait_until(api.url, run_id, {"running"})
    draining = fleet.worker_of(run_id)  # the other one would take the run over if its lease ran out
    assert draining.proc is not None
    draining.proc.send_signal(signal.SIGTERM)
    final = wait_until(api.url, run_id, FINISHED, timeout=30)
    draining.proc.wait(timeout=15)
    assert (final["status"], final["attempt"]) == ("succeeded", 1), "finished by the draining worker, once"
    events = stored_events(api.url, run_id)
    assert_one_clean_log(events)
    assert [e["type"] for e in events].count("napping") == 1, "executed by one worker only"
    assert [e["data"]["status"] for e in events if e["type"] == "status"] == ["running", "succeeded"]
