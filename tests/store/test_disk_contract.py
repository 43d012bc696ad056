"""The store contract on disk use, every backend: ``RUNYARD_MAX_RUN_BYTES`` (a run's
events capped, over all its attempts) and retention sweeps cut into short writes.

Issue 10, "Disk": one anonymous ticker run (1,000,000 x 64 KiB, within the
contract's limits) wrote 137 MiB/s with nothing to stop it, and sweeping it
deleted gigabytes in one write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from runyard.errors import RunTooLarge
from runyard.models import EventDraft, RunStatus, RunUpdate
from runyard.store import AppendGroup, Store, _sweep, store_from_url
from runyard.store._numbering import EVENT_OVERHEAD, event_size
from tests.store.test_contract import SERVED, T0, all_events, created, run

CAP = 10_000
PAD = 1_000  # bytes of data per event below


@pytest.fixture
async def capped(store_url: str) -> AsyncIterator[Store]:
    """A store whose runs may each store CAP bytes of events."""
    store = store_from_url(store_url, max_run_bytes=CAP)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """A store without a cap."""
    store = store_from_url(store_url, max_run_bytes=None)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def padded(run_id: str, n: int, type: str = "tick") -> list[EventDraft]:
    return [EventDraft(run_id, type, b"x" * PAD, T0) for _ in range(n)]


def weight(drafts: list[EventDraft]) -> int:
    return sum(event_size(draft) for draft in drafts)


async def test_a_run_cannot_store_more_than_max_run_bytes(capped: Store) -> None:
    """Regression (issue 10, disk): a run's events were unbounded; past the cap a group is refused whole."""
    (r,) = await created(capped, run(status=RunStatus.RUNNING))
    fits = padded(r.run_id, CAP // weight(padded(r.run_id, 1)))
    assert isinstance((await capped.append([AppendGroup(r.run_id, fits)]))[0], list)

    (refused,) = await capped.append([AppendGroup(r.run_id, padded(r.run_id, 1))])

    assert isinstance(refused, RunTooLarge)
    assert refused.code == "too_large" and refused.run_id == r.run_id
    assert len(await all_events(capped, r.run_id)) == len(fits)
    stored = await capped.get_run(r.run_id)
    assert stored is not None and stored.last_seq == len(fits) and stored.status is RunStatus.RUNNING


async def test_a_group_exactly_at_the_cap_is_stored_and_one_byte_more_is_not(capped: Store) -> None:
    exact, over = await created(capped, run(status=RunStatus.RUNNING), run(status=RunStatus.RUNNING))
    size = CAP - len("tick") - EVENT_OVERHEAD

    results = await capped.append(
        [
            AppendGroup(exact.run_id, [EventDraft(exact.run_id, "tick", b"x" * size, T0)]),
            AppendGroup(over.run_id, [EventDraft(over.run_id, "tick", b"x" * (size + 1), T0)]),
        ]
    )

    assert isinstance(results[0], list) and isinstance(results[1], RunTooLarge)


async def test_the_group_that_passes_the_cap_is_refused_and_earlier_groups_of_its_batch_stay(capped: Store) -> None:
    (r,) = await created(capped, run(status=RunStatus.RUNNING))
    half = padded(r.run_id, CAP // 2 // weight(padded(r.run_id, 1)))

    results = await capped.append(
        [AppendGroup(r.run_id, half), AppendGroup(r.run_id, half), AppendGroup(r.run_id, half)]
    )

    assert [type(result) for result in results] == [list, list, RunTooLarge]
    assert [e.seq for e in await all_events(capped, r.run_id)] == list(range(1, 2 * len(half) + 1))


async def test_the_runtime_s_own_status_changes_are_written_past_the_cap(capped: Store) -> None:
    """The run's end (error, status, end events with the update) is exempt, so a run
    refused for its size still records how it ended."""
    (r,) = await created(capped, run(status=RunStatus.RUNNING))
    await capped.append([AppendGroup(r.run_id, padded(r.run_id, CAP // weight(padded(r.run_id, 1))))])
    ending = [
        EventDraft(r.run_id, "error", b'{"code":"too_large"}', T0),
        EventDraft(r.run_id, "status", b'{"status":"failed"}', T0),
        EventDraft(r.run_id, "end", b'{"status":"failed","error":{"code":"too_large"}}', T0),
    ]
    update = RunUpdate(RunStatus.FAILED, expect=frozenset({RunStatus.RUNNING}), finished_at=T0 + 1)

    (result,) = await capped.append([AppendGroup(r.run_id, ending, update)])

    assert isinstance(result, list)
    assert [e.type for e in (await all_events(capped, r.run_id))[-3:]] == ["error", "status", "end"]
    stored = await capped.get_run(r.run_id)
    assert stored is not None and stored.status is RunStatus.FAILED


async def test_a_retried_run_continues_its_count(capped: Store) -> None:
    """The bytes of every attempt count: a run handed back and claimed again does not start afresh."""
    (r,) = await created(capped, run(max_attempts=2))
    await capped.claim("w1", 1, T0, T0 + 30, pipelines=SERVED)
    most = padded(r.run_id, CAP // weight(padded(r.run_id, 1)) - 1)
    assert isinstance((await capped.append([AppendGroup(r.run_id, most)]))[0], list)
    requeue = RunUpdate(RunStatus.QUEUED, expect=frozenset({RunStatus.RUNNING}), attempt=2, clear_lease=True)
    await capped.append([AppendGroup(r.run_id, [], requeue)])
    (again,) = await capped.claim("w2", 1, T0 + 1, T0 + 31, pipelines=SERVED)
    assert again.run.attempt == 2

    (refused,) = await capped.append([AppendGroup(r.run_id, padded(r.run_id, 2))])

    assert isinstance(refused, RunTooLarge)


async def test_the_count_survives_a_reopen_of_the_store_to_the_byte(store_url: str) -> None:
    """What a reopened store counts (SQLite sums its events' lengths, PostgreSQL reads
    its column) is exactly what was counted when they were appended."""
    if store_url.startswith("memory:"):
        pytest.skip("memory:// is gone with its process")
    first = store_from_url(store_url, max_run_bytes=CAP)
    await first.open()
    (r,) = await created(first, run(status=RunStatus.RUNNING))
    stored = padded(r.run_id, CAP // weight(padded(r.run_id, 1)) - 1)
    await first.append([AppendGroup(r.run_id, stored)])
    await first.close()
    second = store_from_url(store_url, max_run_bytes=CAP)
    await second.open()
    try:
        rest = CAP - weight(stored) - len("tick") - EVENT_OVERHEAD
        last = [EventDraft(r.run_id, "tick", b"y" * rest, T0)]
        (one_byte_more,) = await second.append(
            [AppendGroup(r.run_id, [EventDraft(r.run_id, "tick", b"y" * (rest + 1), T0)])]
        )
        (exactly_full,) = await second.append([AppendGroup(r.run_id, last)])
        assert isinstance(one_byte_more, RunTooLarge)
        assert isinstance(exactly_full, list)
    finally:
        await second.close()


async def test_runs_are_capped_apart(capped: Store) -> None:
    full, other = await created(capped, run(status=RunStatus.RUNNING), run(status=RunStatus.RUNNING))
    await capped.append([AppendGroup(full.run_id, padded(full.run_id, CAP // weight(padded(full.run_id, 1))))])

    results = await capped.append(
        [AppendGroup(full.run_id, padded(full.run_id, 1)), AppendGroup(other.run_id, padded(other.run_id, 1))]
    )

    assert isinstance(results[0], RunTooLarge) and isinstance(results[1], list)


async def test_without_a_cap_a_run_stores_what_it_is_given(store: Store) -> None:
    (r,) = await created(store, run(status=RunStatus.RUNNING))
    (result,) = await store.append([AppendGroup(r.run_id, padded(r.run_id, 50))])
    assert isinstance(result, list) and len(result) == 50


# -- retention in short writes ----------------------------------------------------


async def test_sweeping_a_large_run_in_chunks_deletes_it_whole(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (issue 10, disk): the sweep deleted a run's events in one write; now
    in chunks of at most CHUNK_EVENTS events and CHUNK_BYTES bytes, small runs
    several to a chunk: however they are cut, the expired runs go whole and nothing
    else does."""
    for module in ("runyard.store.sqlite.retention", "runyard.store.postgres.retention"):
        monkeypatch.setattr(f"{module}.CHUNK_EVENTS", 7, raising=False)
        monkeypatch.setattr(f"{module}.CHUNK_BYTES", 3 * PAD, raising=False)
        monkeypatch.setattr(f"{module}.SWEEP_RUNS", 2, raising=False)
    old = await created(store, *(run(status=RunStatus.RUNNING) for _ in range(5)))
    small = await created(store, *(run(status=RunStatus.RUNNING) for _ in range(5)))
    (kept,) = await created(store, run(status=RunStatus.RUNNING))
    done = RunUpdate(RunStatus.SUCCEEDED, finished_at=T0 + 10)
    await store.append([AppendGroup(r.run_id, padded(r.run_id, 40), done) for r in old])
    await store.append([AppendGroup(r.run_id, padded(r.run_id, i % 3), done) for i, r in enumerate(small)])
    await store.append(
        [AppendGroup(kept.run_id, padded(kept.run_id, 40), RunUpdate(RunStatus.SUCCEEDED, finished_at=T0 + 100))]
    )

    assert await store.sweep_runs(T0 + 50) == 10

    for r in old + small:
        assert await store.get_run(r.run_id) is None
        assert await all_events(store, r.run_id) == []
    assert len(await all_events(store, kept.run_id)) == 40
    assert await store.sweep_runs(T0 + 50) == 0


def test_small_runs_share_chunks_and_large_ones_go_alone() -> None:
    groups, large = _sweep.pack(
        [("a", 2, 10), ("b", 2, 10), ("big", 9, 10), ("c", 0, 0), ("d", 1, 15), ("heavy", 1, 99)],
        max_events=5,
        max_bytes=30,
    )
    assert groups == [["a", "b", "c"], ["d"]]
    assert large == ["big", "heavy"]


def test_a_chunk_ends_at_its_byte_budget_but_holds_at_least_one_event() -> None:
    assert _sweep.chunk_end([(1, 10), (2, 10), (3, 10)], max_bytes=20) == 2
    assert _sweep.chunk_end([(4, 50), (5, 10)], max_bytes=20) == 4
    assert _sweep.chunk_end([(1, 1), (2, 1)], max_bytes=20) == 2
