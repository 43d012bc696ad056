"""What only the SQLite store promises: a durable file, WAL, recorded migrations,
long replays, reads that never wait for writes, and writes that commit in groups."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import pytest

from runyard.errors import ConfigurationError, StoreError, StoreUnavailable
from runyard.models import EventDraft, Run, RunStatus, Session
from runyard.store import AppendGroup, store_from_url
from runyard.store.sqlite import (
    BUSY_TIMEOUT_MS,
    MIGRATIONS,
    SQLiteStore,
    busy_timeout_ms,
    database_path,
    refuse_if_in_use,
)
from runyard.store.sqlite.connection import READERS
from runyard.store.sqlite.events import GLANCE_ROWS, append_batch

T0 = 1_700_000_000.0


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "runyard.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(f"sqlite:///{db_path}")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def make_run(run_id: str, session_id: str = "ses_1") -> Run:
    return Run(run_id, session_id, "alice", "ticker", RunStatus.QUEUED, {"count": 1}, created_at=T0)


def drafts(run_id: str, start: int, n: int) -> list[EventDraft]:
    return [EventDraft(run_id, "tick", b'{"i":%d}' % i, T0 + i) for i in range(start, start + n)]


def test_url_names_a_path_relative_to_cwd_or_absolute() -> None:
    assert database_path("sqlite:///./runyard.db") == "./runyard.db"
    assert database_path("sqlite:///data/r.db") == "data/r.db"
    assert database_path("sqlite:////var/lib/r.db") == "/var/lib/r.db"
    assert database_path("sqlite:///:memory:") == ":memory:"
    assert database_path("sqlite://") == ":memory:"
    with pytest.raises(ConfigurationError):
        database_path("sqlite://host/r.db")


def test_busy_timeout_comes_from_the_url() -> None:
    assert database_path("sqlite:///data/r.db?busy_timeout_ms=50") == "data/r.db"
    assert busy_timeout_ms("sqlite:///data/r.db?busy_timeout_ms=50") == 50
    assert busy_timeout_ms("sqlite:///data/r.db") == BUSY_TIMEOUT_MS
    with pytest.raises(ConfigurationError, match="busy_timeout_ms"):
        busy_timeout_ms("sqlite:///r.db?busy_timeout_ms=soon")


async def test_a_write_past_the_busy_timeout_is_store_unavailable_and_writes_nothing(db_path: Path) -> None:
    """Issue 10: a lock held past the busy timeout surfaced as ``sqlite3.OperationalError``
    (500); it is ``StoreUnavailable``, nothing written, and the next write succeeds."""
    store = SQLiteStore(f"sqlite:///{db_path}?busy_timeout_ms=20")
    await store.open()
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable, match="database is locked") as refused:
            await store.create_run(make_run("run_1"), Session("ses_1", "alice", T0, T0))
        assert refused.value.in_doubt is False
        other.execute("ROLLBACK")
        assert await store.get_run("run_1") is None
        await store.create_run(make_run("run_1"), Session("ses_1", "alice", T0, T0))
        assert (await store.get_run("run_1")) is not None
    finally:
        other.close()
        await store.close()


def test_store_from_url_picks_sqlite() -> None:
    assert isinstance(store_from_url("sqlite:///:memory:"), SQLiteStore)


async def test_relative_url_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = SQLiteStore("sqlite:///./runyard.db")
    await store.open()
    await store.close()
    assert (tmp_path / "runyard.db").exists()


async def test_in_memory_database_works_and_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = SQLiteStore("sqlite:///:memory:")
    await store.open()
    try:
        await store.create_run(make_run("run_1"))
        await store.append([AppendGroup("run_1", drafts("run_1", 0, 3))])
        assert [e.seq for e in await store.read_events("run_1", 0, 10)] == [1, 2, 3]
    finally:
        await store.close()
    assert await asyncio.to_thread(os.listdir, tmp_path) == []


async def test_wal_mode_is_on(store: SQLiteStore, db_path: Path) -> None:
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_migrations_are_idempotent_and_recorded(store: SQLiteStore, db_path: Path) -> None:
    assert await store.migrate() == len(MIGRATIONS)
    await store.close()  # one store at a time on a file
    again = SQLiteStore(f"sqlite:///{db_path}")
    await again.open()
    await again.close()
    with sqlite3.connect(db_path) as raw:
        versions = [v for (v,) in raw.execute("SELECT version FROM schema_version ORDER BY version")]
        tables = {name for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert versions == list(range(1, len(MIGRATIONS) + 1))
    assert {"sessions", "messages", "runs", "events", "schema_version"} <= tables


async def test_schema_newer_than_this_code_is_refused(db_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{db_path}")
    await store.open()
    await store.close()
    with sqlite3.connect(db_path) as raw:
        raw.execute("INSERT INTO schema_version VALUES (?, 0)", (len(MIGRATIONS) + 1,))
    newer = SQLiteStore(f"sqlite:///{db_path}")
    with pytest.raises(StoreError, match="newer"):
        await newer.open()


async def test_create_run_with_new_session_is_atomic(store: SQLiteStore) -> None:
    await store.create_run(make_run("run_1"))
    with pytest.raises(sqlite3.IntegrityError):  # the run id is taken: the new session must not stay
        await store.create_run(make_run("run_1", "ses_2"), new_session=Session("ses_2", "alice", T0, T0))
    assert await store.get_session("ses_2") is None


async def test_a_second_store_on_the_same_file_is_refused_while_the_first_is_open(
    store: SQLiteStore, db_path: Path
) -> None:
    """One SQLite file, one process (issue 10): the lock is held for the store's
    lifetime, released when it closes; ``:memory:`` databases are each their own."""
    second = SQLiteStore(f"sqlite:///{db_path}")
    with pytest.raises(StoreError, match=f"'{db_path}' is already in use .* use PostgreSQL and Redis"):
        await second.open()
    with pytest.raises(StoreError, match="already in use"):
        refuse_if_in_use(f"sqlite:///{db_path}")
    await store.ping()  # the first is untouched
    await store.close()
    refuse_if_in_use(f"sqlite:///{db_path}")
    await second.open()
    await second.close()
    memories = [SQLiteStore("sqlite:///:memory:") for _ in range(2)]
    for memory in memories:
        await memory.open()
    for memory in memories:
        await memory.close()


async def test_unopenable_file_is_a_store_error(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path}/missing-dir/r.db")
    with pytest.raises(StoreError, match="missing-dir"):
        await store.open()


async def test_closed_store_refuses_work(db_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{db_path}")
    await store.open()
    await store.close()
    with pytest.raises(StoreError):
        await store.ping()
    with pytest.raises(StoreError):
        await store.get_run("run_1")


async def test_cancelled_append_still_commits_whole(store: SQLiteStore) -> None:
    """A caller cancelled mid-append must not leave the shared writer in an open transaction."""
    await store.create_run(make_run("run_1"))
    task = asyncio.create_task(store.append([AppendGroup("run_1", drafts("run_1", 0, 5_000))]))
    await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (after,) = await store.append([AppendGroup("run_1", drafts("run_1", 0, 1))])
    assert isinstance(after, list)
    assert after[0].seq == 5_001
    events = await store.read_events("run_1", 0, 10_000)
    assert [e.seq for e in events] == list(range(1, after[0].seq + 1))


async def test_reads_proceed_while_a_write_batch_is_in_flight(store: SQLiteStore) -> None:
    await store.create_run(make_run("run_1"))
    await store.append([AppendGroup("run_1", drafts("run_1", 0, 10))])
    await store.create_run(make_run("run_big"))
    big = asyncio.create_task(store.append([AppendGroup("run_big", drafts("run_big", 0, 300_000))]))
    await asyncio.sleep(0.05)  # let the batch take the writer

    assert not big.done()
    assert [e.seq for e in await store.read_events("run_1", 0, 100)] == list(range(1, 11))
    assert await store.read_events("run_big", 0, 10) == []  # nothing of an uncommitted batch shows
    run = await store.get_run("run_big")
    assert run is not None
    assert run.last_seq == 0
    assert not big.done()

    await big
    assert len(await store.read_events("run_big", 0, 1_000_000)) == 300_000


async def test_concurrent_writes_share_transactions(store: SQLiteStore) -> None:
    commits_before = store.commits
    sessions = [Session(f"ses_{i}", "alice", T0, T0) for i in range(500)]
    await asyncio.gather(*(store.create_session(s) for s in sessions))
    assert store.commits - commits_before <= 5  # one per batch, not one per write
    for s in (sessions[0], sessions[250], sessions[-1]):
        assert await store.get_session(s.session_id) == s


async def queued_while_held(store: SQLiteStore, *writes: Coroutine[Any, Any, Any]) -> tuple[list[Any], int]:
    """The writes' outcomes (results or exceptions), once they were queued, in
    order, while the writer thread was held busy; and how many commits there
    were from the held batch's on."""
    started, gate = threading.Event(), threading.Event()

    def hold(db: sqlite3.Connection) -> None:
        started.set()
        gate.wait(10)

    held = asyncio.ensure_future(store._write(hold))
    assert await asyncio.to_thread(started.wait, 10)
    queued = asyncio.gather(*writes, return_exceptions=True)
    await asyncio.sleep(0)  # each write is queued in its first step
    commits_before = store.commits
    gate.set()
    await held
    outcomes = await queued
    return outcomes, store.commits - commits_before


async def in_one_batch(store: SQLiteStore, *writes: Coroutine[Any, Any, Any]) -> list[Any]:
    """The writes' outcomes, queued while the writer thread was held busy and
    committed together in the next batch."""
    outcomes, commits = await queued_while_held(store, *writes)
    assert commits == 2  # the held batch, then all of the writes in one
    return outcomes


async def test_claims_queued_together_go_one_per_batch_each_after_the_creations_of_its_batch(
    store: SQLiteStore,
) -> None:
    """A claim is a batch's costliest write, and the batch's appends wait for it:
    two claims queued at once are written in two batches, the first of them
    behind the creations queued with it, which it may take."""
    claims = [store.claim("w", 1, T0, T0 + 30, pipelines={"ticker"}) for _ in range(2)]
    creations = [
        store.create_run(make_run(f"run_{i}", f"ses_{i}"), Session(f"ses_{i}", "alice", T0, T0)) for i in (1, 2)
    ]
    (first, second, *_), commits = await queued_while_held(store, *claims, *creations)
    assert [c.run.run_id for c in first] == ["run_1"]  # queued after it, created before it
    assert [c.run.run_id for c in second] == ["run_2"]
    assert commits == 3  # the held batch, the creations with the first claim, the second claim alone


async def test_writes_the_writer_thread_cannot_take_fail_instead_of_waiting(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer thread answers a batch's writes; a batch it never got (its pool
    refused it) is answered with the error, and the next batch is written."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("cannot schedule new futures after shutdown")

    with monkeypatch.context() as patched:
        patched.setattr(store._writer_pool, "submit", refuse)
        with pytest.raises(RuntimeError, match="cannot schedule"):
            await asyncio.wait_for(store.create_session(Session("ses_refused", "alice", T0, T0)), 5)
    await store.create_session(Session("ses_next", "alice", T0, T0))
    assert await store.get_session("ses_refused") is None
    assert await store.get_session("ses_next") is not None


async def test_a_failing_write_does_not_fail_the_others_of_its_batch(store: SQLiteStore) -> None:
    """Writes share a transaction: a duplicate key fails alone, and rolls back only
    its own writes (the batch runs again, each write in its own savepoint)."""
    first = Session("ses_dup", "alice", T0, T0)
    await store.create_session(first)
    sessions = [Session(f"ses_{i}", "alice", T0, T0) for i in range(50)]
    sessions.insert(25, Session("ses_dup", "mallory", T0, T0))
    outcomes = await in_one_batch(store, *(store.create_session(s) for s in sessions))
    assert isinstance(outcomes[25], sqlite3.IntegrityError)
    assert all(outcome is None for i, outcome in enumerate(outcomes) if i != 25)
    assert await store.get_session("ses_dup") == first
    for s in sessions[:25] + sessions[26:]:
        assert await store.get_session(s.session_id) == s


async def test_a_batch_run_again_after_a_failing_write_numbers_events_from_what_was_committed(
    store: SQLiteStore,
) -> None:
    """The first attempt's append was rolled back with it: what the writer's cache
    learned from it is forgotten, so the events are numbered once, without a gap."""
    await store.create_session(Session("ses_dup", "alice", T0, T0))
    await store.create_run(make_run("run_a"))
    outcomes = await in_one_batch(
        store,
        store.append([AppendGroup("run_a", drafts("run_a", 0, 3))]),
        store.create_session(Session("ses_dup", "mallory", T0, T0)),
    )
    assert isinstance(outcomes[1], sqlite3.IntegrityError)
    await store.append([AppendGroup("run_a", drafts("run_a", 3, 2))])
    assert [event.seq for event in await store.read_events("run_a", 0, 100)] == [1, 2, 3, 4, 5]


async def test_a_write_that_fails_after_numbering_events_leaves_no_trace_in_the_numbering(
    store: SQLiteStore,
) -> None:
    """A write rolled back in its savepoint (its batch held other writes) after it
    numbered events: the writer forgets what its cache learned, so the events
    written next are numbered from what was committed."""
    await store.create_run(make_run("run_a"))

    def numbers_then_fails(db: sqlite3.Connection) -> None:
        append_batch(db, [AppendGroup("run_a", drafts("run_a", 0, 3))], store._run_states)
        raise RuntimeError("fails after numbering")

    outcomes = await in_one_batch(
        store, store._write(numbers_then_fails), store.create_session(Session("ses_1", "alice", T0, T0))
    )
    assert isinstance(outcomes[0], RuntimeError) and outcomes[1] is None
    await store.append([AppendGroup("run_a", drafts("run_a", 0, 2))])
    assert [event.seq for event in await store.read_events("run_a", 0, 100)] == [1, 2]


async def test_a_cancelled_writer_still_commits_its_work(store: SQLiteStore) -> None:
    """A caller cancelled while its write waits for a batch only stops waiting: the
    write is not lost, and the writes queued behind it still commit."""
    await store.create_run(make_run("run_big"))
    big = asyncio.create_task(store.append([AppendGroup("run_big", drafts("run_big", 0, 100_000))]))
    await asyncio.sleep(0.01)  # let the batch take the writer thread
    session = Session("ses_1", "alice", T0, T0)
    cancelled = asyncio.create_task(store.create_session(session))
    behind = asyncio.create_task(store.touch_session("ses_1", T0 + 5))
    await asyncio.sleep(0)  # both are queued for the next batch
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await asyncio.gather(big, behind)
    found = await store.get_session("ses_1")
    assert found is not None
    assert found.last_activity == T0 + 5


async def test_a_run_and_a_stream_s_first_page_are_read_while_every_reader_thread_is_busy(
    store: SQLiteStore,
) -> None:
    """Such small reads run in the loop, on a connection of its own (a trip to a
    reader thread cost more than the read): they never queue behind replays.
    So does the short rest of a history, however large the page asked for (a
    follower opening on a few missed events asks for hundreds after its first
    page of one). Long or heavy reads (a replay's pages) stay in the reader threads."""
    await store.create_run(make_run("run_1"))
    await store.append([AppendGroup("run_1", drafts("run_1", 0, 100))])
    await store.create_run(make_run("run_big", "ses_2"))
    big = [EventDraft("run_big", "tick", b"x" * 4096, T0) for _ in range(16)]
    await store.append([AppendGroup("run_big", big)])
    release = threading.Event()
    busy = [asyncio.ensure_future(store._query(lambda db: release.wait(10))) for _ in range(READERS)]
    try:
        run = await asyncio.wait_for(store.get_run("run_1"), 2)
        first_page = await asyncio.wait_for(store.read_events("run_1", 0, 16), 2)
        rest = await asyncio.wait_for(store.read_events("run_1", 100 - GLANCE_ROWS, 1_000), 2)
        long_read = asyncio.ensure_future(store.read_events("run_1", 0, 1_000))
        heavy_read = asyncio.ensure_future(store.read_events("run_big", 0, 16))
        await asyncio.sleep(0.05)
        assert not long_read.done(), "a long read goes to a reader thread"
        assert not heavy_read.done(), "so do a few rows that weigh 64 KiB"
    finally:
        release.set()
        await asyncio.gather(*busy)
    assert run is not None and run.last_seq == 100
    assert [e.seq for e in first_page] == list(range(1, 17))
    assert [e.seq for e in rest] == list(range(101 - GLANCE_ROWS, 101))
    assert len(await long_read) == 100
    assert [e.seq for e in await heavy_read] == list(range(1, 17))


class _Failing:
    """A connection every statement of which fails with SQLite's ``code``."""

    def __init__(self, code: int) -> None:
        self.code = code

    def execute(self, *_: Any) -> Any:
        exc = sqlite3.OperationalError("as SQLite would say it")
        exc.sqlite_errorcode = self.code
        raise exc


async def test_a_small_read_that_finds_the_database_locked_is_read_by_a_reader_thread(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop never waits for a lock: such a read goes where waiting is harmless."""
    await store.create_run(make_run("run_1"))
    await store.append([AppendGroup("run_1", drafts("run_1", 0, 3))])
    monkeypatch.setattr(store, "_loop_reader", _Failing(sqlite3.SQLITE_BUSY))
    run = await store.get_run("run_1")
    assert run is not None and run.last_seq == 3
    assert [e.seq for e in await store.read_events("run_1", 0, 16)] == [1, 2, 3]


async def test_a_small_read_that_fails_otherwise_is_store_unavailable(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "_loop_reader", _Failing(sqlite3.SQLITE_IOERR))
    with pytest.raises(StoreUnavailable):
        await store.get_run("run_1")
