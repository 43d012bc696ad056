"""The SQLite store's connections: one writer thread committing in groups, a pool of readers.

Every write is a synchronous function of the writer connection, queued by
``_write``. One flusher task takes everything queued and runs it in the writer
thread as ONE transaction (group commit), which then answers every write of
the batch in one loop callback: a write that raises is rolled back
alone and fails alone, the others commit (the batch is run again with a
savepoint per write when one raises; ``group_commit.commit`` says why not always). A
batch costs one thread hop and one commit however many writes it holds; writes
that arrive while it is in the thread share the next one. There is no timer:
under light load a write waits for nothing but its own commit. Being the only
writer, ``append`` numbers events from ``last_seq`` without races.

The WAL's pages are copied into the file by a checkpoint thread
(``checkpoints.py``), not by the writer. Reads run on a small pool of reader
threads, each with its own connection; WAL lets them proceed while a batch is
in flight, so a long replay never queues behind the writers. A read of a few
small rows by index (a run, a stream's first page) runs in the loop instead,
on a connection of its own that never waits for a lock (``_glance``).
``sqlite:///:memory:`` has a single connection (a second one would open
another, empty database), owned by the writer thread, so there reads run in
that thread too, between batches.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import BrokenExecutor, ThreadPoolExecutor
from typing import Any

from runyard.errors import StoreError, StoreUnavailable
from runyard.store._numbering import RunState
from runyard.store.base import DEFAULT_MAX_RUN_BYTES, Lifecycle
from runyard.store.sqlite.checkpoints import Checkpointer
from runyard.store.sqlite.file import BUSY_TIMEOUT_MS, busy_timeout_ms, database_path, lock_file
from runyard.store.sqlite.group_commit import Batch, T, Work, answer, commit
from runyard.store.sqlite.schema import migrate

RunStates = dict[str, RunState]

log = logging.getLogger("runyard.store")

READERS = 2

MAX_BATCH = 2_000  # writes per transaction: bounds a single commit's latency
# auto_vacuum = INCREMENTAL (first: it holds only if set before the first table is
# created) lets a sweep give pages back to the file system in short steps
# (``incremental_vacuum``); an older file keeps NONE until ``runyard migrate``.
# wal_autocheckpoint: checkpoint every ~40 MiB of WAL rather than 4 MiB, so that
# busy batches are not each followed by a checkpoint (measured: 3.0 vs 3.8 ms a batch);
# the pages are copied meanwhile by a thread of their own (``checkpoints.py``), so the
# writer's checkpoint finds little left to copy and starts the WAL over.
# secure_delete = FAST: Debian's SQLite (and others) are built with SECURE_DELETE on,
# which zeroes every freed page: a sweep then wrote every byte it deleted to the WAL
# again (measured: sweeping a 255 MiB run grew the WAL to 280 MiB, and in chunks each
# autocheckpoint of it stalled the writer 100-250 ms). FAST still zeroes what is deleted inside
# pages it writes anyway, and the freed pages go back to the file system.
# journal_size_limit: a WAL that grew (a long reader held the checkpoint back) is
# cut back to 64 MiB whenever it restarts, instead of keeping its largest size.
WRITER_PRAGMAS = (
    "PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
    " PRAGMA secure_delete = FAST;"
    f" PRAGMA wal_autocheckpoint = 10000; PRAGMA journal_size_limit = {64 * 1024 * 1024};"
    f" PRAGMA busy_timeout = {BUSY_TIMEOUT_MS};"
)
INCREMENTAL = 2  # PRAGMA auto_vacuum's answer for INCREMENTAL
READER_PRAGMAS = f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}; PRAGMA query_only = ON;"
# The loop's own reader never waits for a lock: a read that would is sent to a reader thread
LOOP_READER_PRAGMAS = "PRAGMA query_only = ON; PRAGMA busy_timeout = 0;"


# SQLite's primary result codes that mean "busy or unreachable now", not "this
# statement is wrong": the same request may succeed later (503, not 500).
UNAVAILABLE = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN}


def _unavailable(exc: Exception, path: str) -> Exception:
    """``exc`` as ``StoreUnavailable`` when SQLite was busy or unreachable. Nothing
    was written: a transaction that failed is rolled back whole."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, sqlite3.OperationalError) and code is not None and code & 0xFF in UNAVAILABLE:
        return StoreUnavailable(f"SQLite database {path!r} is busy or unavailable: {exc}", in_doubt=False)
    return exc


def _connect(path: str, pragmas: str) -> sqlite3.Connection:
    try:
        # isolation_level=None: transactions are begun and ended here, never implicitly;
        # check_same_thread=False: close() closes the readers' connections from the writer thread
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open SQLite database {path!r}: {exc}") from exc
    try:
        db.executescript(pragmas)
    except BaseException:
        db.close()
        raise
    return db


def _switch_to_incremental_vacuum(db: sqlite3.Connection) -> None:
    """Rewrite the whole file with auto_vacuum = INCREMENTAL (outside any transaction)."""
    db.execute("PRAGMA auto_vacuum = INCREMENTAL")
    db.execute("VACUUM")


class SQLiteConnection(Lifecycle):
    """A SQLite file in WAL mode: the writer thread, the readers, and the store's lifecycle."""

    def __init__(
        self,
        url: str = "sqlite:///./runyard.db",
        readers: int = READERS,
        max_run_bytes: int | None = DEFAULT_MAX_RUN_BYTES,
        lease_s: float | None = None,  # unused: one process owns the file, and its transactions
    ) -> None:
        self.url = url
        self.max_run_bytes = max_run_bytes
        self.path = database_path(url)
        self._busy_timeout = f" PRAGMA busy_timeout = {busy_timeout_ms(url)};"  # after the defaults: it wins
        self._memory = self.path == ":memory:"
        self._reader_count = readers
        # The standard sqlite3 module, not aiosqlite: aiosqlite runs one statement per
        # thread hop and offers no public way to run a whole transaction in its thread,
        # which prevents group commit (measured: 1,000 run creations at ~1.4 s p50).
        self._writer_pool: ThreadPoolExecutor | None = None
        self._reader_pool: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None  # the writer's; None when not open
        self._reader_dbs: list[sqlite3.Connection] = []
        self._loop_reader: sqlite3.Connection | None = None  # a file's, while open (``_glance``)
        self._checkpointer: Checkpointer | None = None  # a file's, while open
        self._local = threading.local()  # .db: the reader thread's own connection
        self._pending: Batch = []
        self._pending_claims: Batch = []  # one at the end of each batch (``_write_claim``)
        self._flusher: asyncio.Task[None] | None = None
        self._lock: int | None = None  # the descriptor holding <path>.lock, while open
        self._run_states: RunStates = {}  # unfinished runs; touched by the writer thread only
        self._incremental = True  # auto_vacuum = INCREMENTAL: a sweep gives its pages back
        self.commits = 0  # transactions committed, for tests and benchmarks

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        if self._db is not None:
            return
        if not self._memory:
            self._lock = lock_file(self.path)
        self._writer_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runyard-sqlite-writer")
        try:
            loop = asyncio.get_running_loop()
            self._db = await loop.run_in_executor(
                self._writer_pool, _connect, self.path, WRITER_PRAGMAS + self._busy_timeout
            )
            if not self._memory:
                self._reader_pool = ThreadPoolExecutor(
                    max_workers=self._reader_count,
                    thread_name_prefix="runyard-sqlite-reader",
                    initializer=self._open_reader,
                )
            await self._migrate_schema()
            if not self._memory:
                self._loop_reader = _connect(self.path, LOOP_READER_PRAGMAS)
            self._incremental = self._memory or await self._auto_vacuum() == INCREMENTAL
            if not self._memory:
                self._checkpointer = Checkpointer(self.path)
                self._checkpointer.start()
        except BaseException:
            await self.close()
            raise
        if not self._incremental:
            log.warning(
                "%s was created without auto_vacuum = INCREMENTAL, so swept runs never shrink it:"
                " run `runyard migrate` once while no runyard process uses it (it rewrites the file)",
                self.path,
            )

    def _open_reader(self) -> None:
        db = _connect(self.path, READER_PRAGMAS + self._busy_timeout)
        self._local.db = db
        self._reader_dbs.append(db)

    async def close(self) -> None:
        db, self._db = self._db, None  # from here on, every call raises StoreError
        if self._flusher is not None:
            await asyncio.shield(self._flusher)  # the writes already queued commit first
        writer, readers = self._writer_pool, self._reader_pool
        self._writer_pool = self._reader_pool = None
        if writer is not None:
            await asyncio.get_running_loop().run_in_executor(writer, self._close_connections, db, readers)
            writer.shutdown(wait=False)  # its thread is idle now and ends by itself
        lock, self._lock = self._lock, None
        if lock is not None:
            os.close(lock)  # after the connections: the next process finds the file at rest

    def _close_connections(self, db: sqlite3.Connection | None, readers: ThreadPoolExecutor | None) -> None:
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.stop()
        if readers is not None:
            readers.shutdown(wait=True)  # reads in flight finish first
        connections, self._reader_dbs = self._reader_dbs, []
        if self._loop_reader is not None:
            connections.append(self._loop_reader)
            self._loop_reader = None
        for reader in connections:
            reader.close()
        if db is not None:
            db.close()

    async def ping(self) -> None:
        await self._read("SELECT 1")

    async def migrate(self) -> int:
        """Apply pending migrations; also (once) rewrite an older file so that sweeps
        can give its space back. That VACUUM rewrites the whole file and blocks every
        write meanwhile (minutes for gigabytes), so it is done here, by the explicit
        ``runyard migrate``, never when a server opens the store."""
        version = await self._migrate_schema()
        if not self._incremental:
            await self._outside_transaction(_switch_to_incremental_vacuum)
            self._incremental = await self._auto_vacuum() == INCREMENTAL
            log.info("%s now gives swept runs' space back (auto_vacuum = INCREMENTAL)", self.path)
        return version

    async def _migrate_schema(self) -> int:
        return await self._write(lambda db: migrate(db, self.path))

    async def _auto_vacuum(self) -> int:
        """The writer's view: a reader's connection may not have seen a VACUUM yet."""
        mode: int = await self._outside_transaction(lambda db: db.execute("PRAGMA auto_vacuum").fetchone()[0])
        return mode

    # -- plumbing --------------------------------------------------------------

    def _closed(self) -> StoreError:
        return StoreError(f"store {self.url} is not open")

    @property
    def _writes_waiting(self) -> bool:
        """Whether writes are queued for the writer thread (claims included)."""
        return bool(self._pending or self._pending_claims)

    async def _write(self, work: Work[T]) -> T:
        """Run ``work`` in the writer thread, in the next group transaction, in its own savepoint."""
        return await self._queue(work, self._pending)

    async def _write_claim(self, work: Work[T]) -> T:
        """Run ``work``, a claim, at the end of a group transaction that holds no
        other claim. A claim is a batch's costliest write and every append of its
        batch waits for it: claims made one after the other (``Engine``) go one
        per batch, each behind the creations it may take."""
        return await self._queue(work, self._pending_claims)

    async def _queue(self, work: Work[T], queue: Batch) -> T:
        db = self._db
        if db is None:
            raise self._closed()
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        queue.append((work, done))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(db), name="runyard-sqlite-flusher")
        # A cancelled caller cancels only ``done``: its work stays queued and commits
        # or fails whole, so the writer is never left in a half-done transaction.
        return await done

    async def _flush(self, db: sqlite3.Connection) -> None:
        """Commit what is queued, batch after batch, until nothing is."""
        loop = asyncio.get_running_loop()
        try:
            while self._writes_waiting:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                if self._pending_claims:
                    batch.append(self._pending_claims.pop(0))
                try:
                    await loop.run_in_executor(self._writer_pool, self._commit_and_answer, loop, db, batch)
                except Exception as exc:  # the thread never took the batch: no caller is left waiting
                    answer(batch, [_unavailable(exc, self.path)] * len(batch))
        finally:
            self._flusher = None

    def _commit_and_answer(self, loop: asyncio.AbstractEventLoop, db: sqlite3.Connection, batch: Batch) -> None:
        """In the writer thread: commit ``batch``, then answer each of its writes in
        one loop callback. Answered from here, a write's caller resumes one loop
        iteration sooner than when the flusher answered after being woken itself
        (``bench/streams.py`` steady, 10 runs alternated: latency p50 5.5 -> 4.1 ms)."""
        try:
            outcomes = commit(db, [work for work, _ in batch], self._run_states.clear)
        except Exception as exc:
            outcomes = [_unavailable(exc, self.path)] * len(batch)
            # the batch rolled back, appends included: what the cache learned from it is void
            self._run_states.clear()
        else:
            self.commits += 1  # before any caller resumes
        loop.call_soon_threadsafe(answer, batch, outcomes)

    async def _outside_transaction(self, work: Work[T]) -> T:
        """Run ``work`` in the writer thread between two batches, in no transaction
        (a checkpoint, a VACUUM): the writer's single thread keeps it from overlapping one."""
        db = self._db
        if db is None:
            raise self._closed()
        return await asyncio.get_running_loop().run_in_executor(self._writer_pool, work, db)

    async def _query(self, query: Work[T]) -> T:
        """Run ``query`` in a reader thread, on that thread's connection."""
        db = self._db
        if db is None:
            raise self._closed()
        loop = asyncio.get_running_loop()
        try:
            if self._reader_pool is None:  # :memory:: the writer's connection is the only one
                return await loop.run_in_executor(self._writer_pool, query, db)
            return await loop.run_in_executor(self._reader_pool, self._on_reader, query)
        except BrokenExecutor as exc:  # a reader connection could not be opened
            raise StoreError(f"cannot open SQLite database {self.path!r} for reading") from exc
        except sqlite3.OperationalError as exc:
            raise _unavailable(exc, self.path) from exc

    async def _glance(self, query: Work[T]) -> T:
        """Run ``query``, a read of a few small rows by index (a run, a stream's
        first page), on the loop's own connection, in the loop: such a read costs
        SQLite a few microseconds, where its trip to a reader thread and back
        cost the process ~160 us of CPU (opening a stream reads twice: 660-780
        -> 330-390 us, ``bench/README.md``, "A tenth round"); nor does it queue
        behind long replays. A read that would wait for a lock (another process
        holding the file, a recovery) goes to a reader thread: the loop never waits."""
        db = self._loop_reader
        if db is None or self._db is None:  # :memory:, or closed
            return await self._query(query)
        try:
            return query(db)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                return await self._query(query)
            raise _unavailable(exc, self.path) from exc

    def _on_reader(self, query: Work[T]) -> T:
        db: sqlite3.Connection = self._local.db
        return query(db)

    async def _read(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        """All rows of one query."""
        return await self._query(lambda db: db.execute(sql, parameters).fetchall())

    async def _execute(self, sql: str, parameters: Sequence[Any] = ()) -> None:
        """One write statement."""

        def work(db: sqlite3.Connection) -> None:
            db.execute(sql, parameters)

        await self._write(work)
