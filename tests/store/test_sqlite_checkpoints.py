"""The SQLite store's background checkpoints (``store/sqlite/checkpoints.py``):
the WAL's pages reach the database file without the writer copying them."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
import time
from pathlib import Path

from runyard.store.sqlite import SQLiteStore
from runyard.store.sqlite.checkpoints import Checkpointer

THREAD = "runyard-sqlite-checkpoints"


def _checkpointer_threads() -> set[threading.Thread]:
    """The checkpoint threads alive in this process (other tests' stores may be open)."""
    return {thread for thread in threading.enumerate() if thread.name == THREAD}


def _writer_that_never_checkpoints(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (n integer)")
    return db


def _rows_in_the_file_alone(path: Path, tmp_path: Path) -> int:
    """The rows a copy of the database file holds without its WAL."""
    alone = tmp_path / "alone.db"
    shutil.copyfile(path, alone)
    with sqlite3.connect(alone) as db:
        if db.execute("SELECT count(*) FROM sqlite_master WHERE name = 't'").fetchone() == (0,):
            return 0  # not even the table
        count: int = db.execute("SELECT count(*) FROM t").fetchone()[0]
    return count


def test_committed_pages_reach_the_database_file_while_the_writer_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    writer = _writer_that_never_checkpoints(path)
    writer.executemany("INSERT INTO t VALUES (?)", [(n,) for n in range(1_000)])
    assert _rows_in_the_file_alone(path, tmp_path) == 0  # all of it is in the WAL

    checkpointer = Checkpointer(str(path), every_s=0.01)
    checkpointer.start()
    try:
        writer.execute("BEGIN IMMEDIATE")  # a write transaction stays open: a PASSIVE copy does not wait for it
        deadline = time.monotonic() + 5
        while checkpointer.copies < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        writer.execute("COMMIT")
        checkpointer.stop()

        assert checkpointer.copies >= 2
        assert _rows_in_the_file_alone(path, tmp_path) == 1_000  # before the writer's close copies them too
    finally:
        checkpointer.stop()
        writer.close()


def test_stop_ends_the_thread_at_once(tmp_path: Path) -> None:
    _writer_that_never_checkpoints(tmp_path / "w.db").close()
    others = _checkpointer_threads()
    checkpointer = Checkpointer(str(tmp_path / "w.db"), every_s=60)
    checkpointer.start()
    assert len(_checkpointer_threads() - others) == 1

    started = time.monotonic()
    checkpointer.stop()

    assert time.monotonic() - started < 1
    assert _checkpointer_threads() - others == set()


async def test_a_file_store_checkpoints_in_the_background_while_open(tmp_path: Path) -> None:
    others = _checkpointer_threads()
    store = SQLiteStore(f"sqlite:///{tmp_path / 'r.db'}")
    await store.open()
    try:
        assert len(_checkpointer_threads() - others) == 1
    finally:
        await store.close()

    assert _checkpointer_threads() - others == set()


async def test_an_in_memory_store_has_no_checkpoints() -> None:
    others = _checkpointer_threads()
    store = SQLiteStore("sqlite:///:memory:")
    await store.open()
    try:
        await asyncio.sleep(0)
        assert _checkpointer_threads() - others == set()
    finally:
        await store.close()
