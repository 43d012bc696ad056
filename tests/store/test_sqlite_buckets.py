"""The SQLite store finds a run's events by bucket (16 seqs each, ``schema.BUCKET_BITS``),
not by run: every read of a run's events gives what a read by run gave, whatever
buckets a run's events and the batches that wrote them straddle, after a restart,
after a rollback, after a sweep cut short, and in a file written before buckets."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from runyard.models import EventDraft, Run, RunStatus, RunUpdate, Session
from runyard.store import AppendGroup
from runyard.store.sqlite import MIGRATIONS, SQLiteStore
from runyard.store.sqlite import retention as sqlite_retention
from runyard.store.sqlite.events import append_batch

T0 = 1_700_000_000.0
BUCKET = 16
# the migrations before buckets: the last one drops the (run key, seq) index
BEFORE_BUCKETS = MIGRATIONS.index("DROP INDEX events_run_seq") - 3


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "runyard.db"


@pytest.fixture
def store_url(db_path: Path) -> str:
    """A file of this test's own, opened by the store suites' ``store`` fixture (conftest.py)."""
    return f"sqlite:///{db_path}"


def make_run(run_id: str, session_id: str = "ses_1") -> Run:
    return Run(run_id, session_id, "alice", "ticker", RunStatus.RUNNING, {}, created_at=T0)


def drafts(run_id: str, start: int, n: int, pos: bool = False) -> list[EventDraft]:
    return [
        EventDraft(run_id, "tick", b'{"i":%d}' % i, T0 + i, i + 1 if pos else None) for i in range(start, start + n)
    ]


async def seqs(store: SQLiteStore, run_id: str, after: int, limit: int) -> list[int]:
    return [event.seq for event in await store.read_events(run_id, after, limit)]


async def test_pages_of_a_run_are_read_whole_across_its_buckets(store: SQLiteStore) -> None:
    await store.create_run(make_run("run_1"))
    # batches of 1, 15, 17 and 17 events: each ends at or past a bucket's edge
    for start, n in ((0, 1), (1, 15), (16, 17), (33, 17)):
        await store.append([AppendGroup("run_1", drafts("run_1", start, n))])
    for after in (0, 1, 14, 15, 16, 17, 31, 32, 33, 47, 48, 49, 50, 60):
        for limit in (0, 1, 15, 16, 17, 33, 64, 1_000):
            expected = list(range(after + 1, min(after + limit, 50) + 1))
            assert await seqs(store, "run_1", after, limit) == expected, (after, limit)
    run = await store.get_run("run_1")
    assert run is not None and run.last_seq == 50


async def test_each_run_s_last_seq_is_read_from_its_own_last_bucket(store: SQLiteStore) -> None:
    """Runs written in the same batches share buckets; each keeps its own count,
    at every bucket's edge (15, 16, 17 and 32 events), and a run without any has 0."""
    counts = {"run_15": 15, "run_16": 16, "run_17": 17, "run_32": 32, "run_0": 0}
    for run_id in counts:
        await store.create_run(make_run(run_id, f"ses_{run_id}"))
    for i in range(32):
        await store.append([AppendGroup(run_id, drafts(run_id, i, 1)) for run_id, n in counts.items() if i < n])
    for run_id, n in counts.items():
        run = await store.get_run(run_id)
        assert run is not None and run.last_seq == n, run_id
        assert await seqs(store, run_id, 0, 100) == list(range(1, n + 1))


async def test_after_a_restart_a_run_s_events_are_numbered_on_from_its_last(db_path: Path) -> None:
    """The writer's cache is gone: it reads each run's last seq from the file,
    through the run's last bucket, and numbers on without a gap or a clash."""
    first = SQLiteStore(f"sqlite:///{db_path}")
    await first.open()
    await first.create_run(make_run("run_1"))
    await first.append([AppendGroup("run_1", drafts("run_1", 0, 31))])
    await first.close()
    second = SQLiteStore(f"sqlite:///{db_path}")
    await second.open()
    try:
        await second.append([AppendGroup("run_1", drafts("run_1", 31, 3))])
        assert await seqs(second, "run_1", 0, 100) == list(range(1, 35))
        run = await second.get_run("run_1")
        assert run is not None and run.last_seq == 34
    finally:
        await second.close()


async def test_a_rolled_back_write_that_crossed_into_a_new_bucket_leaves_the_run_as_it_was(
    store: SQLiteStore,
) -> None:
    """The run's last bucket moved with the events in the same transaction: rolled
    back with them, so the next events are numbered from what was committed."""
    await store.create_run(make_run("run_1"))
    await store.append([AppendGroup("run_1", drafts("run_1", 0, 15))])

    def crosses_then_fails(db: sqlite3.Connection) -> None:
        append_batch(db, [AppendGroup("run_1", drafts("run_1", 15, 20))], store._run_states)
        raise RuntimeError("fails after numbering")

    with pytest.raises(RuntimeError):
        await store._write(crosses_then_fails)
    run = await store.get_run("run_1")
    assert run is not None and run.last_seq == 15
    await store.append([AppendGroup("run_1", drafts("run_1", 15, 2))])
    assert await seqs(store, "run_1", 0, 100) == list(range(1, 18))


async def test_a_session_stream_is_read_from_any_cursor_across_its_runs_buckets(store: SQLiteStore) -> None:
    await store.create_session(Session("ses_1", "alice", T0, T0))
    await store.create_run(make_run("run_a"))
    await store.append([AppendGroup("run_a", drafts("run_a", 0, 40))])
    await store.append([AppendGroup("run_a", [], RunUpdate(RunStatus.SUCCEEDED, finished_at=T0))])
    await store.create_run(make_run("run_b"))
    for start in range(0, 40, 10):
        await store.append([AppendGroup("run_b", drafts("run_b", start, 10))])
    everything = await store.read_session_events("alice", "ses_1", 0, 1_000)
    assert [(e.event.run_id, e.event.seq) for e in everything] == [("run_a", s) for s in range(1, 41)] + [
        ("run_b", s) for s in range(1, 41)
    ]
    cursors = [e.cursor for e in everything]
    for i in (0, 14, 15, 16, 39, 40, 47, 55, 79):
        page = await store.read_session_events("alice", "ses_1", cursors[i], 20)
        assert [e.cursor for e in page] == cursors[i + 1 : i + 21], i


async def test_a_run_s_replay_mark_is_its_last_event_with_one_even_buckets_back(store: SQLiteStore) -> None:
    """The runtime's events (no ``pos``) after a run's last emitted one may fill
    whole buckets: the mark is found behind them."""
    await store.create_run(make_run("run_1"))
    await store.append([AppendGroup("run_1", drafts("run_1", 0, 20, pos=True))])
    await store.append([AppendGroup("run_1", drafts("run_1", 20, 40))])
    assert (await store.replay("run_1")).mark == 20
    await store.create_run(make_run("run_none", "ses_2"))
    await store.append([AppendGroup("run_none", drafts("run_none", 0, 20))])
    assert (await store.replay("run_none")).mark == 0


async def test_a_sweep_cut_short_after_a_run_s_first_chunks_deletes_the_rest(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restart between two chunks of a large run's sweep leaves its oldest
    buckets empty: the next sweep finds where its events begin and deletes them all."""
    monkeypatch.setattr(sqlite_retention, "CHUNK_EVENTS", 40)
    await store.create_run(make_run("run_big"))
    for start in range(0, 200, 50):
        await store.append([AppendGroup("run_big", drafts("run_big", start, 50))])
    await store.append([AppendGroup("run_big", [], RunUpdate(RunStatus.SUCCEEDED, finished_at=T0))])
    run_pk = (await store._read("SELECT created_seq FROM runs WHERE run_id = 'run_big'"))[0][0]
    for _ in range(2):  # two chunks of 40, then the process stopped
        assert await store._write(lambda db: sqlite_retention._delete_event_chunk(db, run_pk))
    assert await seqs(store, "run_big", 0, 1_000) == list(range(81, 201))
    assert await store.sweep_runs(T0 + 1) == 1
    assert await store._read("SELECT count(*) FROM events") == [(0,)]
    assert await store.get_run("run_big") is None


async def test_a_file_written_before_buckets_is_migrated_whole(db_path: Path) -> None:
    """Its runs' last buckets are filled from their events and the index is rebuilt:
    their events are read, counted and numbered on as before."""
    raw = sqlite3.connect(db_path, isolation_level=None)
    raw.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
    for version, statement in enumerate(MIGRATIONS[:BEFORE_BUCKETS], start=1):
        raw.execute(statement)
        raw.execute("INSERT INTO schema_version VALUES (?, 0)", (version,))
    raw.execute(
        "INSERT INTO runs (run_id, session_id, owner, pipeline, status, metadata, created_at, attempt, max_attempts)"
        " VALUES ('run_old', 'ses_1', 'alice', 'ticker', 'running', '{}', ?, 1, 1),"
        " ('run_empty', 'ses_2', 'alice', 'ticker', 'queued', '{}', ?, 1, 1)",
        (T0, T0),
    )
    raw.executemany(
        "INSERT INTO events (run_pk, seq, type, data, ts) VALUES (1, ?, 'tick', '{}', ?)",
        [(seq, T0) for seq in range(1, 38)],
    )
    raw.close()
    store = SQLiteStore(f"sqlite:///{db_path}")
    await store.open()
    try:
        old, empty = await store.get_run("run_old"), await store.get_run("run_empty")
        assert old is not None and old.last_seq == 37
        assert empty is not None and empty.last_seq == 0
        assert await seqs(store, "run_old", 30, 100) == list(range(31, 38))
        await store.append([AppendGroup("run_old", drafts("run_old", 37, 2))])
        assert await seqs(store, "run_old", 0, 100) == list(range(1, 40))
    finally:
        await store.close()
