"""What the SQLite store promises about its files: a sweep gives the space of the
runs it deletes back to the file system (database and WAL), and never holds the
writer for a whole run (issue 10, "Disk")."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runyard.models import EventDraft, Run, RunStatus, RunUpdate
from runyard.store import AppendGroup
from runyard.store.sqlite import SQLiteStore
from runyard.store.sqlite import retention as sqlite_retention

T0 = 1_700_000_000.0
PAD = b"x" * 16_384
EVENTS = 400  # ~6.5 MiB of events in the run that is swept


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "runyard.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(f"sqlite:///{db_path}", max_run_bytes=None)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def expired_run(store: SQLiteStore, run_id: str = "run_big") -> Run:
    """A finished run of EVENTS 16 KiB events, finished at T0."""
    run = Run(run_id, "ses_1", "alice", "ticker", RunStatus.RUNNING, {}, created_at=T0)
    await store.create_run(run)
    for _ in range(0, EVENTS, 50):
        await store.append([AppendGroup(run_id, [EventDraft(run_id, "tick", PAD, T0)] * 50)])
    await store.append([AppendGroup(run_id, [], RunUpdate(RunStatus.SUCCEEDED, finished_at=T0))])
    return run


def sizes(db_path: Path) -> tuple[int, int]:
    """The database file's and its WAL's sizes in bytes."""
    wal = db_path.with_name(db_path.name + "-wal")
    return db_path.stat().st_size, wal.stat().st_size if wal.exists() else 0


def auto_vacuum(db_path: Path) -> int:
    with sqlite3.connect(db_path) as db:
        mode: int = db.execute("PRAGMA auto_vacuum").fetchone()[0]
    return mode


async def test_a_new_database_gives_incremental_vacuum(store: SQLiteStore, db_path: Path) -> None:
    assert auto_vacuum(db_path) == 2  # INCREMENTAL


async def test_a_sweep_shrinks_the_database_and_truncates_the_wal(store: SQLiteStore, db_path: Path) -> None:
    """Regression (issue 10, disk): after retention swept a large run, the 2.2 GB
    database and 2.1 GB WAL never shrank."""
    await expired_run(store)
    database, _ = sizes(db_path)
    assert database > EVENTS * len(PAD) // 2 or sizes(db_path)[1] > EVENTS * len(PAD) // 2

    assert await store.sweep_runs(T0 + 1) == 1

    database, wal = sizes(db_path)
    assert database < 1024 * 1024
    assert wal == 0


async def test_a_sweep_lets_other_writes_through_between_its_chunks(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (issue 10, disk): the sweep of one large run blocked every SQLite
    write for 1.1-1.4 s. Now each chunk is a write of its own: a write queued while
    the sweep runs commits long before the sweep ends."""
    monkeypatch.setattr("runyard.store.sqlite.retention.CHUNK_BYTES", 4 * len(PAD))  # 100 chunks
    loop, chunked = asyncio.get_running_loop(), asyncio.Event()

    def noticed_chunk(db: sqlite3.Connection, run_pk: int) -> bool:
        loop.call_soon_threadsafe(chunked.set)
        return delete_event_chunk(db, run_pk)

    delete_event_chunk = sqlite_retention._delete_event_chunk
    monkeypatch.setattr(sqlite_retention, "_delete_event_chunk", noticed_chunk)
    await expired_run(store)
    other = Run("run_other", "ses_2", "bob", "ticker", RunStatus.RUNNING, {}, created_at=T0)
    await store.create_run(other)
    commits = store.commits

    sweep = asyncio.create_task(store.sweep_runs(T0 + 1))
    await asyncio.wait_for(chunked.wait(), 10)  # the sweep is under way
    (written,) = await store.append([AppendGroup(other.run_id, [EventDraft(other.run_id, "tick", b"{}", T0)])])

    assert isinstance(written, list)
    assert not sweep.done()
    assert await sweep == 1
    assert store.commits - commits >= EVENTS // 4


async def test_an_older_database_warns_and_runyard_migrate_switches_it(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file created before auto_vacuum = INCREMENTAL keeps NONE (SQLite changes it
    only by rewriting the file): opening says so, and ``migrate`` rewrites it once."""
    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TABLE made_by_an_older_runyard (x)")
    assert auto_vacuum(db_path) == 0
    store = SQLiteStore(f"sqlite:///{db_path}", max_run_bytes=None)
    with caplog.at_level(logging.WARNING, logger="runyard.store"):
        await store.open()
    try:
        assert "runyard migrate" in caplog.text
        assert auto_vacuum(db_path) == 0

        await store.migrate()

        assert auto_vacuum(db_path) == 2
        await expired_run(store)
        assert await store.sweep_runs(T0 + 1) == 1
        assert sizes(db_path)[0] < 1024 * 1024
    finally:
        await store.close()


async def test_a_sweep_cut_short_before_giving_space_back_is_finished_by_the_next(
    store: SQLiteStore, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await expired_run(store)
    with monkeypatch.context() as cut:
        cut.setattr(store, "_give_back_space", lambda: asyncio.sleep(0))  # the process stopped here
        assert await store.sweep_runs(T0 + 1) == 1
    assert sizes(db_path)[0] + sizes(db_path)[1] > EVENTS * len(PAD) // 2

    assert await store.sweep_runs(T0 + 1) == 0

    database, wal = sizes(db_path)
    assert database < 1024 * 1024
    assert wal == 0


async def test_the_truncating_checkpoint_leaves_the_writer_s_busy_timeout_as_it_was(store: SQLiteStore) -> None:
    """A deployment may choose its own busy timeout: the checkpoint's short one is put back to it."""
    await expired_run(store)
    chosen = await store._outside_transaction(lambda db: db.execute("PRAGMA busy_timeout = 1234").fetchone()[0])

    assert await store.sweep_runs(T0 + 1) == 1

    after = await store._outside_transaction(lambda db: db.execute("PRAGMA busy_timeout").fetchone()[0])
    assert chosen == after == 1234
