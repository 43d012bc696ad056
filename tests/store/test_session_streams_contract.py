"""The store contract of session streams (issue 13), every backend:
``read_session_events`` pages every event of every run of an owner's session by a
cursor that grows in commit order, and appended events carry their session's key.

Runs once per URL in ``tests/conftest.py::STORE_URLS``, as ``test_contract.py``.
"""

from __future__ import annotations

import asyncio

from runyard.models import EventDraft, SessionEvent, session_channel
from runyard.store import AppendGroup, Store
from tests.store.test_contract import created, events, run


def draft(run_id: str, type_: str) -> EventDraft:
    return EventDraft(run_id, type_, b"{}", 1.0)


async def append(store: Store, run_id: str, *types: str) -> None:
    (result,) = await store.append([AppendGroup(run_id, [draft(run_id, t) for t in types])])
    events(result)


async def whole(store: Store, owner: str, session_id: str, page: int = 1000) -> list[SessionEvent]:
    """The session's stream, read page by page from the start."""
    read: list[SessionEvent] = []
    while True:
        got = await store.read_session_events(owner, session_id, read[-1].cursor if read else 0, page)
        if not got:
            return read
        read += got


def seen(stream: list[SessionEvent]) -> list[tuple[str, int, str]]:
    return [(entry.event.run_id, entry.event.seq, entry.event.type) for entry in stream]


async def test_a_session_stream_holds_its_runs_events_in_the_order_they_were_appended(store: Store) -> None:
    a, b = await created(store, run("ses_s", "alice"), run("ses_s", "alice"))
    (elsewhere,) = await created(store, run("ses_t", "alice"))
    await append(store, a.run_id, "a1", "a2")
    await append(store, elsewhere.run_id, "x1")
    await append(store, b.run_id, "b1")
    await append(store, a.run_id, "a3")
    stream = await whole(store, "alice", "ses_s")
    assert seen(stream) == [(a.run_id, 1, "a1"), (a.run_id, 2, "a2"), (b.run_id, 1, "b1"), (a.run_id, 3, "a3")]
    cursors = [entry.cursor for entry in stream]
    assert cursors == sorted(set(cursors)) and cursors[0] > 0
    assert stream[0].event.data == b"{}" and stream[0].event.ts == 1.0


async def test_paging_from_every_cursor_gives_exactly_the_rest(store: Store) -> None:
    a, b = await created(store, run("ses_s"), run("ses_s"))
    for i in range(4):
        await append(store, a.run_id, f"a{i}")
        await append(store, b.run_id, f"b{i}", f"b{i}'")
    stream = await whole(store, "alice", "ses_s")
    assert len(stream) == 12
    for i, entry in enumerate(stream):
        assert await store.read_session_events("alice", "ses_s", entry.cursor, 1000) == stream[i + 1 :]
        assert await store.read_session_events("alice", "ses_s", entry.cursor, 2) == stream[i + 1 : i + 3]
    assert await whole(store, "alice", "ses_s", page=5) == stream


async def test_events_appended_after_a_read_come_after_its_cursor(store: Store) -> None:
    (a,) = await created(store, run("ses_s"))
    await append(store, a.run_id, "first")
    (read,) = await store.read_session_events("alice", "ses_s", 0, 10)
    (b,) = await created(store, run("ses_s"))  # a run created after the read
    await append(store, b.run_id, "second")
    assert seen(await store.read_session_events("alice", "ses_s", read.cursor, 10)) == [(b.run_id, 1, "second")]


async def test_concurrent_appends_to_one_session_are_each_streamed_once(store: Store) -> None:
    runs = await created(store, *(run("ses_s") for _ in range(4)))
    await asyncio.gather(*(append(store, r.run_id, f"e{i}") for i in range(10) for r in runs))
    stream = await whole(store, "alice", "ses_s", page=7)
    assert sorted((run_id, type_) for run_id, _, type_ in seen(stream)) == sorted(
        (r.run_id, f"e{i}") for i in range(10) for r in runs
    )
    for r in runs:  # each run's events in its own order
        assert [entry.event.seq for entry in stream if entry.event.run_id == r.run_id] == list(range(1, 11))


async def test_a_session_stream_is_its_owners_alone(store: Store) -> None:
    (mine,) = await created(store, run("ses_s", "alice"))
    (theirs,) = await created(store, run("ses_s", "bob"))  # the same session id, another owner's
    await append(store, mine.run_id, "mine")
    await append(store, theirs.run_id, "theirs")
    assert seen(await whole(store, "alice", "ses_s")) == [(mine.run_id, 1, "mine")]
    assert seen(await whole(store, "bob", "ses_s")) == [(theirs.run_id, 1, "theirs")]
    assert await store.read_session_events("carol", "ses_s", 0, 10) == []


async def test_appended_events_carry_their_sessions_key_for_publishing(store: Store) -> None:
    (a,) = await created(store, run("ses_s", "alice"))
    (result,) = await store.append([AppendGroup(a.run_id, [draft(a.run_id, "x")])])
    assert [event.session for event in events(result)] == [session_channel("alice", "ses_s")]
