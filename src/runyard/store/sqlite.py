"""``sqlite:///path.db``: the embedded default, one file in WAL mode.

Every write is a synchronous function of the writer connection, queued by
``_write``. One flusher task takes everything queued and runs it in the writer
thread as ONE transaction (group commit), each write in its own savepoint: a
write that raises is rolled back alone and fails alone, the others commit. A
batch costs one thread hop and one commit however many writes it holds; writes
that arrive while it is in the thread share the next one. There is no timer:
under light load a write waits for nothing but its own commit. Being the only
writer, ``append`` numbers events from ``last_seq`` without races.

Reads run on a small pool of reader threads, each with its own connection; WAL
lets them proceed while a batch is in flight, so a long replay never queues
behind the writers. ``sqlite:///:memory:`` has a single connection (a second one
would open another, empty database), owned by the writer thread, so there reads
run in that thread too, between batches.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import BrokenExecutor, ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import orjson

from runyard.errors import ConfigurationError, QuotaExceeded, StoreError, StoreUnavailable
from runyard.models import Event, Message, Multitask, Run, RunStatus, Session
from runyard.store._numbering import RunState, cancel_group, cancellations, claim_group, number
from runyard.store._sqlite_schema import (
    CLAIMABLE,
    EVENT_CHUNK,
    FINISHED,
    IN_JSON,
    INSERT_RUN,
    INSERT_SESSION,
    LAST_SEQ,
    MIGRATIONS,
    RUN_COLUMNS,
    SESSION_COLUMNS,
    STORED_BYTES,
    UNSERVED,
    dump,
    insert_events,
    json_list,
    load,
    merged_columns,
    migrate,
    run_from_row,
    run_row,
    session_from_row,
    session_row,
)
from runyard.store._sweep import CHUNK_BYTES, CHUNK_EVENTS, SWEEP_RUNS, chunk_end, pack
from runyard.store.base import (
    DEFAULT_MAX_RUN_BYTES,
    WORKER_FORGOTTEN_S,
    Admission,
    AppendGroup,
    AppendResult,
    Cancelled,
    Claimed,
    Entered,
    LeaseRenewal,
    SessionEntry,
    Store,
)
from runyard.store.memory import apply_update, check_entry

__all__ = ["MIGRATIONS", "SQLiteStore", "database_path", "refuse_if_in_use"]

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], T]

log = logging.getLogger("runyard.store")

READERS = 2
BUSY_TIMEOUT_MS = 5_000
MAX_BATCH = 2_000  # writes per transaction: bounds a single commit's latency
# auto_vacuum = INCREMENTAL (first: it holds only if set before the first table is
# created) lets a sweep give pages back to the file system in short steps
# (``incremental_vacuum``); an older file keeps NONE until ``runyard migrate``.
# wal_autocheckpoint: checkpoint every ~40 MiB of WAL rather than 4 MiB, so that
# busy batches are not each followed by a checkpoint (measured: 3.0 vs 3.8 ms a batch).
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
# Pages (4 KiB) given back per incremental_vacuum step, a transaction of the writer
# thread: a writer waits for one step at most. Measured after a 256 MiB sweep on 2
# cores shared with other work (load 7): 512 pages take 6-7 ms (max 21-27 ms);
# 1,024 take 12-17 ms (max 52-53 ms); 2,048 take 39 ms (max 62 ms).
VACUUM_PAGES = 512
# The checkpoint that truncates the WAL after a sweep waits at most this long for
# readers (then it is tried again later): the writer thread waits with it. It is
# tried when no write is waiting, for up to QUIET_TRIES tries, then regardless (a
# steady stream of writes may leave no such moment: measured, none in 10 s with a
# ticker writing every 5 ms), up to CHECKPOINT_TRIES in all.
CHECKPOINT_BUSY_MS = 10
QUIET_TRIES = 10
CHECKPOINT_TRIES = 20
CHECKPOINT_RETRY_S = 0.2
READER_PRAGMAS = f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}; PRAGMA query_only = ON;"


def database_path(url: str) -> str:
    """``sqlite:///x.db`` → ``x.db`` (relative to the working directory), ``sqlite:////abs.db``
    → ``/abs.db``, ``sqlite:///:memory:`` (or ``sqlite://``) → ``:memory:``; a ``?query`` is not
    part of the path (``busy_timeout_ms``)."""
    url = url.partition("?")[0]
    if url == "sqlite://":
        return ":memory:"
    if not url.startswith("sqlite:///") or url == "sqlite:///":
        raise ConfigurationError(f"bad SQLite URL {url!r}: use sqlite:///relative.db or sqlite:////abs.db")
    return url.removeprefix("sqlite:///")


def busy_timeout_ms(url: str) -> int:
    """``?busy_timeout_ms=N``: how long a write waits for SQLite's lock held by another
    connection before it fails with ``StoreUnavailable`` (503); ``BUSY_TIMEOUT_MS`` by default."""
    value = dict(parse_qsl(urlsplit(url).query)).get("busy_timeout_ms", str(BUSY_TIMEOUT_MS))
    if not value.isdigit():
        raise ConfigurationError(f"bad SQLite URL {url!r}: busy_timeout_ms is a number of milliseconds")
    return int(value)


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


def _lock_file(path: str) -> int:
    """Hold ``path``'s sidecar ``<path>.lock`` exclusively for the store's lifetime;
    the descriptor to close to release it.

    One process per file: the writer caches run states on the premise that it is
    the only writer, and two processes would claim each other's runs. flock, not
    fcntl: SQLite's own locks on the database are POSIX (fcntl) locks, which a
    process loses on closing *any* descriptor of that file, so a lock taken on
    the database itself would put SQLite's at risk; a sidecar file shares
    nothing with SQLite. The kernel releases it when the process dies, kill -9
    included: no stale lock to clean up by hand."""
    lock_path = f"{path}.lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot open SQLite database {path!r}: cannot create its lock file ({exc})") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(
            f"SQLite database {path!r} is already in use by another runyard process (it holds {lock_path!r})."
            " A SQLite file serves one process: stop that process first, or, to run several processes"
            " (API and workers, or two apps side by side), use PostgreSQL and Redis"
            " (RUNYARD_STORE=postgresql://..., RUNYARD_BROKER=redis://...)."
        ) from None
    except OSError as exc:
        os.close(fd)
        raise StoreError(f"cannot lock {lock_path!r} for SQLite database {path!r}: {exc}") from exc
    return fd


def refuse_if_in_use(url: str) -> None:
    """``StoreError`` naming the file if another process holds ``url``'s database:
    for a server to refuse with that one line before it starts (the store's own
    lock, taken when it opens, is what guards the file)."""
    path = database_path(url)
    if path != ":memory:" and os.path.exists(f"{path}.lock"):
        os.close(_lock_file(path))


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


def _commit(db: sqlite3.Connection, works: list[Work[Any]]) -> list[Any]:
    """Run ``works`` in one transaction, each in its own savepoint (in the writer thread).

    Returns each work's result, or the exception it raised (then none of its
    writes stay). Raises, with nothing written, if the transaction as a whole fails.
    """
    outcomes: list[Any] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        for work in works:
            db.execute("SAVEPOINT w")
            try:
                outcomes.append(work(db))
            except Exception as exc:
                if not db.in_transaction:  # SQLite rolled everything back (a full disk, an I/O error)
                    raise
                db.execute("ROLLBACK TO w")
                outcomes.append(exc)
            db.execute("RELEASE w")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return outcomes


RunStates = dict[str, RunState]


def _append(
    db: sqlite3.Connection, groups: Sequence[AppendGroup], known: RunStates, max_run_bytes: int | None = None
) -> list[AppendResult]:
    """Number and insert the groups' events. ``known`` caches unfinished runs'
    states across batches (``key``: the run's key in the events table): exact,
    because the writer thread, which alone calls this, is the only writer and
    every status change passes through here. It learns this batch's states only
    once all of the batch's SQL has succeeded."""
    batch: RunStates = {}
    missing = []
    for run_id in dict.fromkeys(group.run_id for group in groups):
        if run_id in known:
            batch[run_id] = _copy(known[run_id])
        else:
            missing.append(run_id)
    if missing:
        rows = db.execute(
            f"SELECT run_id, created_seq, status, {LAST_SEQ}, worker_id, attempt, lease_expires_at, {STORED_BYTES}"
            f" FROM runs WHERE run_id {IN_JSON}",
            (json_list(missing),),
        )
        batch.update(
            (run_id, RunState(RunStatus(status), seq, pk, worker, attempt, lease, stored))
            for run_id, pk, status, seq, worker, attempt, lease, stored in rows
        )
    results, events = number(groups, batch, max_run_bytes)
    _insert_events(db, [(batch[e.run_id].key, e.seq, e.type, e.data, e.ts) for e in events])
    for run_id, run in batch.items():
        columns = merged_columns(run.updates)
        if columns:
            assignments = ", ".join(f"{column} = ?" for column in columns)
            db.execute(f"UPDATE runs SET {assignments} WHERE run_id = ?", (*columns.values(), run_id))
    for run_id, run in batch.items():
        if run.status.finished:
            known.pop(run_id, None)  # it will not change again
        else:
            run.appended, run.updates = False, []
            known[run_id] = run
    return results


def _idempotent_run(db: sqlite3.Connection, owner: str, key: str, since: float) -> tuple[str, Run] | None:
    seen = db.execute(
        "SELECT fingerprint, run_id FROM idempotency_keys WHERE owner = ? AND key = ? AND created_at >= ?",
        (owner, key, since),
    ).fetchone()
    if seen is None:
        return None
    run = db.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (seen[1],)).fetchone()
    return None if run is None else (seen[0], run_from_row(run))  # a swept run's key is as good as gone


def _admit(db: sqlite3.Connection, run: Run, admission: Admission) -> Run | None:
    """In the writer thread, so checks and counts cannot race: the first run of a
    repeated key, or None once ``run`` is admitted (and counted)."""
    key = admission.idempotency_key
    if key is not None:
        seen = _idempotent_run(db, run.owner, key, admission.since)
        if seen is not None:
            return admission.repeat_of(*seen)
    if admission.quota is not None:
        counted = db.execute(
            "INSERT INTO owner_quota (owner, runs_created) VALUES (?, 1) ON CONFLICT (owner)"
            " DO UPDATE SET runs_created = runs_created + 1 WHERE runs_created < ? RETURNING runs_created",
            (run.owner, admission.quota),
        ).fetchone()
        if counted is None or admission.quota < 1:
            raise QuotaExceeded(f"owner {run.owner!r} has created all {admission.quota} runs of its quota")
    if key is not None:
        db.execute(
            "INSERT OR REPLACE INTO idempotency_keys (owner, key, fingerprint, run_id, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (run.owner, key, admission.fingerprint, run.run_id, run.created_at),
        )
    return None


def _copy(state: RunState) -> RunState:
    return RunState(
        state.status,
        state.last_seq,
        state.key,
        state.worker_id,
        state.attempt,
        state.lease_expires_at,
        state.stored_bytes,
    )


def _claim(
    db: sqlite3.Connection, worker_id: str, limit: int, at: float, until: float, served: str, known: RunStates
) -> list[Claimed]:
    """Claim in the writer thread: being the only writer, select-then-update cannot race."""
    rows = db.execute(CLAIMABLE, (served, max(limit, 0))).fetchall()
    runs = [run_from_row(row) for row in rows]
    groups = [claim_group(run.run_id, run.attempt, worker_id, at, until) for run in runs]
    claimed = []
    for run, row, group, result in zip(runs, rows, groups, _append(db, groups, known), strict=True):
        if isinstance(result, list) and group.update is not None:
            apply_update(run, group.update)
            run.last_seq = result[0].seq
            claimed.append(Claimed(run, result[0], cancel_requested=bool(row[-1])))
    return claimed


# each expired run's events: how many, and their bytes (length() of a BLOB reads no overflow page)
EVENT_WEIGHTS = f"SELECT run_pk, count(*), sum(length(data)) FROM events WHERE run_pk {IN_JSON} GROUP BY run_pk"


def _delete_event_chunk(db: sqlite3.Connection, run_pk: int) -> bool:
    """Delete the run's oldest events, one chunk (``_sweep``); whether any may be left
    (a small run takes one write, not two)."""
    sizes = db.execute(
        "SELECT seq, length(data) FROM events WHERE run_pk = ? ORDER BY seq LIMIT ?", (run_pk, CHUNK_EVENTS)
    ).fetchall()
    if not sizes:
        return False
    last = chunk_end(sizes, CHUNK_BYTES)
    db.execute("DELETE FROM events WHERE run_pk = ? AND seq <= ?", (run_pk, last))
    return last < sizes[-1][0] or len(sizes) == CHUNK_EVENTS


def _delete_runs(db: sqlite3.Connection, run_pks: list[int]) -> int:
    """Delete runs whose events are gone (and any event appended meanwhile)."""
    keys = orjson.dumps(run_pks).decode()
    db.execute(f"DELETE FROM events WHERE run_pk {IN_JSON}", (keys,))
    deleted: int = db.execute(f"DELETE FROM runs WHERE created_seq {IN_JSON} AND {FINISHED}", (keys,)).rowcount
    return deleted


def _vacuum_step(db: sqlite3.Connection) -> bool:
    """Give up to VACUUM_PAGES free pages back to the file system, in a transaction of
    its own; whether more are left. ``executescript``: the pragma frees one page per
    step of its statement, and ``execute`` takes only the first."""
    free: int = db.execute("PRAGMA freelist_count").fetchone()[0]
    if not free:
        return False
    db.executescript(f"PRAGMA incremental_vacuum({VACUUM_PAGES});")
    left: int = db.execute("PRAGMA freelist_count").fetchone()[0]
    return 0 < left < free


def _backfill(db: sqlite3.Connection) -> None:
    """Copy the WAL into the database file (shrinking the file to the database's size)
    on a reader's connection: a PASSIVE checkpoint takes no writer lock, so writes go
    on meanwhile, and the TRUNCATE checkpoint after it, in the writer thread, finds
    little left to copy (measured after a 256 MiB sweep: 16-63 ms, mostly the file
    system truncating a 40 MiB WAL, instead of 80-120 ms)."""
    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()


def _checkpoint(db: sqlite3.Connection) -> bool:
    """Checkpoint the whole WAL and truncate it to nothing; False if a reader kept it."""
    usual: int = db.execute("PRAGMA busy_timeout").fetchone()[0]
    db.execute(f"PRAGMA busy_timeout = {CHECKPOINT_BUSY_MS}")
    try:
        busy: int = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    finally:
        db.execute(f"PRAGMA busy_timeout = {usual}")
    return busy == 0


def _switch_to_incremental_vacuum(db: sqlite3.Connection) -> None:
    """Rewrite the whole file with auto_vacuum = INCREMENTAL (outside any transaction)."""
    db.execute("PRAGMA auto_vacuum = INCREMENTAL")
    db.execute("VACUUM")


def _cancel_unfinished(
    db: sqlite3.Connection, session_id: str, at: float, known: RunStates, sparing: str = ""
) -> list[Cancelled]:
    """Cancel the session's queued and running runs but ``sparing`` (in the writer
    thread); last in its work, as ``_append`` must be."""
    runs = [
        (run_id, RunStatus(status), pipeline, owner, attempt)
        for run_id, status, pipeline, owner, attempt in db.execute(
            "SELECT run_id, status, pipeline, owner, attempt FROM runs"
            f" WHERE session_id = ? AND NOT {FINISHED} AND run_id != ?"
            " ORDER BY created_seq",
            (session_id, sparing),
        )
    ]
    if not runs:
        return []
    return cancellations(session_id, runs, _append(db, [cancel_group(run[0], at) for run in runs], known))


def _enter(
    db: sqlite3.Connection, run: Run, entry: SessionEntry, admission: Admission | None, known: RunStates
) -> Entered:
    """``enter_session`` in the writer thread: the only writer, so the session
    cannot change between its checks and the run's insertion."""
    if admission is not None:
        first = _admit(db, run, admission)  # rolled back with the savepoint if a check below fails
        if first is not None:
            return Entered(first)
    found = db.execute(f"SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = ?", (run.session_id,)).fetchone()
    busy = db.execute(
        f"SELECT run_id FROM runs WHERE session_id = ? AND NOT {FINISHED} ORDER BY created_seq LIMIT 1",
        (run.session_id,),
    ).fetchone()
    check_entry(None if found is None else session_from_row(found), run, entry, busy[0] if busy else None)
    db.execute(INSERT_RUN, run_row(run))
    db.execute(
        "UPDATE sessions SET last_activity = max(last_activity, ?) WHERE session_id = ?",
        (run.created_at, run.session_id),
    )
    if busy is None or entry.multitask is not Multitask.INTERRUPT:
        return Entered(run)
    # after the insertion, because _append must come last: the new run is spared
    return Entered(run, _cancel_unfinished(db, run.session_id, run.created_at, known, sparing=run.run_id))


def _insert_events(db: sqlite3.Connection, rows: list[tuple[int, int, str, bytes, float]]) -> None:
    start = 0
    while start < len(rows):
        size = min(EVENT_CHUNK, 1 << ((len(rows) - start).bit_length() - 1))
        chunk = rows[start : start + size]
        db.execute(insert_events(size), [value for row in chunk for value in row])
        start += size


class SQLiteStore(Store):
    """A SQLite file in WAL mode: one writer thread committing in groups, a pool of readers."""

    def __init__(
        self,
        url: str = "sqlite:///./runyard.db",
        readers: int = READERS,
        max_run_bytes: int | None = DEFAULT_MAX_RUN_BYTES,
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
        self._local = threading.local()  # .db: the reader thread's own connection
        self._pending: list[tuple[Work[Any], asyncio.Future[Any]]] = []
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
            self._lock = _lock_file(self.path)
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
            self._incremental = self._memory or await self._auto_vacuum() == INCREMENTAL
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
        if readers is not None:
            readers.shutdown(wait=True)  # reads in flight finish first
        connections, self._reader_dbs = self._reader_dbs, []
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

    async def _write(self, work: Work[T]) -> T:
        """Run ``work`` in the writer thread, in the next group transaction, in its own savepoint."""
        db = self._db
        if db is None:
            raise self._closed()
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((work, done))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(db), name="runyard-sqlite-flusher")
        # A cancelled caller cancels only ``done``: its work stays queued and commits
        # or fails whole, so the writer is never left in a half-done transaction.
        return await done

    async def _flush(self, db: sqlite3.Connection) -> None:
        """Commit what is queued, batch after batch, until nothing is."""
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                works = [work for work, _ in batch]
                try:
                    outcomes = await loop.run_in_executor(self._writer_pool, _commit, db, works)
                except Exception as exc:
                    outcomes = [_unavailable(exc, self.path)] * len(batch)
                    # the batch rolled back, appends included: what the cache learned
                    # from it is void (the writer thread is idle until the next batch)
                    self._run_states.clear()
                else:
                    self.commits += 1
                for (_, done), outcome in zip(batch, outcomes, strict=True):
                    if done.done():  # its caller was cancelled
                        continue
                    if isinstance(outcome, BaseException):  # no work returns an exception
                        done.set_exception(outcome)
                    else:
                        done.set_result(outcome)
        finally:
            self._flusher = None

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

    # -- sessions and memory ---------------------------------------------------

    async def create_session(self, session: Session) -> None:
        await self._execute(INSERT_SESSION, session_row(session))

    async def get_session(self, session_id: str) -> Session | None:
        rows = await self._read(f"SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = ?", (session_id,))
        return session_from_row(rows[0]) if rows else None

    async def touch_session(self, session_id: str, at: float) -> None:
        await self._execute(
            "UPDATE sessions SET last_activity = max(last_activity, ?) WHERE session_id = ?", (at, session_id)
        )

    async def delete_session(self, session_id: str, at: float) -> list[Cancelled]:
        def work(db: sqlite3.Connection) -> list[Cancelled]:
            db.execute("UPDATE sessions SET deleted = 1 WHERE session_id = ?", (session_id,))
            db.execute("DELETE FROM messages WHERE session_id = ?", (session_id,))
            return _cancel_unfinished(db, session_id, at, self._run_states)

        return await self._write(work)

    async def forget_idle_sessions(self, idle_before: float) -> int:
        # a session with a run still queued or running is busy, never idle
        idle = (
            "SELECT session_id FROM sessions s WHERE last_activity < ? AND NOT EXISTS "
            "(SELECT 1 FROM runs r WHERE r.session_id = s.session_id AND r.status IN ('queued', 'running'))"
        )

        def work(db: sqlite3.Connection) -> int:
            forgotten: int = db.execute(
                f"SELECT count(DISTINCT session_id) FROM messages WHERE session_id IN ({idle})", (idle_before,)
            ).fetchone()[0]
            db.execute(f"DELETE FROM messages WHERE session_id IN ({idle})", (idle_before,))
            return forgotten

        return await self._write(work)

    async def history(self, session_id: str) -> list[Message]:
        rows = await self._read(
            "SELECT role, content, ts, extra FROM messages WHERE session_id = ? ORDER BY message_id",
            (session_id,),
        )
        return [Message(row[0], load(row[1]), row[2], load(row[3])) for row in rows]

    async def append_message(self, session_id: str, message: Message, keep: int) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO messages (session_id, role, content, ts, extra) VALUES (?, ?, ?, ?, ?)",
                (session_id, message.role, dump(message.content), message.ts, dump(message.extra)),
            )
            # everything at or below the (keep + 1)-th newest goes
            db.execute(
                "DELETE FROM messages WHERE session_id = ? AND message_id <= (SELECT message_id FROM messages"
                " WHERE session_id = ? ORDER BY message_id DESC LIMIT 1 OFFSET ?)",
                (session_id, session_id, max(keep, 0)),
            )

        await self._write(work)

    # -- runs ------------------------------------------------------------------

    async def create_run(self, run: Run, new_session: Session | None = None, admission: Admission | None = None) -> Run:
        row = run_row(run)
        session = None if new_session is None else session_row(new_session)

        def work(db: sqlite3.Connection) -> Run:
            if admission is not None:
                first = _admit(db, run, admission)
                if first is not None:
                    return first
            if session is not None:
                db.execute(INSERT_SESSION, session)
            db.execute(INSERT_RUN, row)
            return run

        return await self._write(work)

    async def enter_session(self, run: Run, entry: SessionEntry, admission: Admission | None = None) -> Entered:
        return await self._write(lambda db: _enter(db, run, entry, admission, self._run_states))

    async def idempotent_run(self, owner: str, key: str, since: float) -> tuple[str, Run] | None:
        return await self._query(lambda db: _idempotent_run(db, owner, key, since))

    async def forget_idempotency_keys(self, before: float) -> int:
        return await self._write(
            lambda db: db.execute("DELETE FROM idempotency_keys WHERE created_at < ?", (before,)).rowcount
        )

    async def get_run(self, run_id: str) -> Run | None:
        rows = await self._read(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
        return run_from_row(rows[0]) if rows else None

    async def list_runs(
        self,
        owner: str | None,
        *,
        session_id: str | None = None,
        statuses: Sequence[RunStatus] | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[Run]:
        where = ["1"]
        parameters: list[Any] = []
        if owner is not None:
            where.append("owner = ?")
            parameters.append(owner)
        if session_id is not None:
            where.append("session_id = ?")
            parameters.append(session_id)
        if statuses:
            where.append(f"status {IN_JSON}")
            parameters.append(json_list(s.value for s in statuses))
        if before is not None:
            # an unknown cursor compares with NULL: nothing is older than it
            where.append("created_seq < (SELECT created_seq FROM runs WHERE run_id = ?)")
            parameters.append(before)
        rows = await self._read(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE {' AND '.join(where)} ORDER BY created_seq DESC LIMIT ?",
            (*parameters, max(limit, 0)),
        )
        return [run_from_row(row) for row in rows]

    async def runs_with_status(self, statuses: Iterable[RunStatus]) -> list[Run]:
        rows = await self._read(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE status {IN_JSON} ORDER BY created_seq",
            (json_list(s.value for s in statuses),),
        )
        return [run_from_row(row) for row in rows]

    async def count_queued(self) -> int:
        rows = await self._read("SELECT count(*) FROM runs WHERE status = 'queued'")
        return int(rows[0][0])

    async def unfinished_runs(self, session_id: str) -> list[Run]:
        rows = await self._read(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE session_id = ? AND NOT {FINISHED} ORDER BY created_seq",
            (session_id,),
        )
        return [run_from_row(row) for row in rows]

    async def expired_leases(self, at: float) -> list[Run]:
        rows = await self._read(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE status = 'running' AND lease_expires_at < ? ORDER BY created_seq",
            (at,),
        )
        return [run_from_row(row) for row in rows]

    async def claim(
        self, worker_id: str, limit: int, at: float, lease_until: float, *, pipelines: Collection[str]
    ) -> list[Claimed]:
        served = json_list(pipelines)
        return await self._write(lambda db: _claim(db, worker_id, limit, at, lease_until, served, self._run_states))

    async def request_cancel(self, run_id: str) -> None:
        await self._execute("UPDATE runs SET cancel_requested = 1 WHERE run_id = ? AND status = 'running'", (run_id,))

    async def renew_leases(self, worker_id: str, run_ids: Sequence[str], until: float) -> LeaseRenewal:
        def work(db: sqlite3.Connection) -> LeaseRenewal:
            rows = db.execute(
                f"UPDATE runs SET lease_expires_at = ? WHERE run_id {IN_JSON} AND status = 'running' AND worker_id = ?"
                " RETURNING run_id, cancel_requested",
                (until, json_list(run_ids), worker_id),
            ).fetchall()
            for run_id, _ in rows:
                if run_id in self._run_states:  # the numbering's view of the lease, for recovery
                    self._run_states[run_id].lease_expires_at = until
            kept = {run_id for run_id, _ in rows}
            return LeaseRenewal(lost=set(run_ids) - kept, cancel={run_id for run_id, flag in rows if flag})

        return await self._write(work) if run_ids else LeaseRenewal()

    async def worker_seen(self, worker_id: str, pipelines: Collection[str], at: float) -> None:
        served = json_list(sorted(pipelines))

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO workers (worker_id, pipelines, last_seen) VALUES (?, ?, ?)",
                (worker_id, served, at),
            )
            db.execute("DELETE FROM workers WHERE last_seen < ?", (at - WORKER_FORGOTTEN_S,))

        await self._write(work)

    async def forget_worker(self, worker_id: str) -> None:
        await self._execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,))

    async def unserved_pipelines(self, seen_since: float) -> dict[str, int]:
        return {pipeline: count for pipeline, count in await self._read(UNSERVED, (seen_since,))}

    async def sweep_runs(self, finished_before: float) -> int:
        """Each chunk of events is a write of its own (``_sweep``), queued behind the
        writes waiting then, so a writer waits for one chunk at most; then the freed
        pages go back to the file system and the WAL is truncated, in short steps too."""
        swept = 0
        while True:
            rows = await self._read(
                f"SELECT created_seq FROM runs WHERE {FINISHED} AND finished_at < ? ORDER BY finished_at LIMIT ?",
                (finished_before, SWEEP_RUNS),
            )
            if not rows:
                break
            keys = orjson.dumps([pk for (pk,) in rows]).decode()
            weights = {pk: (count, size) for pk, count, size in await self._read(EVENT_WEIGHTS, (keys,))}
            small, large = pack([(pk, *weights.get(pk, (0, 0))) for (pk,) in rows], CHUNK_EVENTS, CHUNK_BYTES)
            for run_pks in small:  # several small runs, events and all, in one write
                swept += await self._write(functools.partial(_delete_runs, run_pks=run_pks))
            for run_pk in large:  # a large one chunk by chunk
                while await self._write(functools.partial(_delete_event_chunk, run_pk=run_pk)):
                    pass
                swept += await self._write(functools.partial(_delete_runs, run_pks=[run_pk]))
        # also when a sweep was cut short (a restart) after deleting, before giving back;
        # not for a few free pages (other deletes leave some): each time truncates the WAL
        if swept or (self._incremental and not self._memory and await self._free_pages() >= VACUUM_PAGES):
            await self._give_back_space()
        return swept

    async def _free_pages(self) -> int:
        pages: int = (await self._read("PRAGMA freelist_count"))[0][0]
        return pages

    async def _give_back_space(self) -> None:
        """Return the file's free pages to the file system, VACUUM_PAGES per write, then
        truncate the WAL, at a quiet moment (no write waiting) if one comes soon, so
        that a sweep shrinks both files."""
        if self._memory:
            return
        await self._query(_backfill)  # what earlier writes left in the WAL, off the writer thread
        if self._incremental:
            # step after step: a batch queued during a step was handed to the writer
            # thread before this loop resumes, so it runs before the next step
            while await self._outside_transaction(_vacuum_step):
                await self._query(_backfill)
        for attempt in range(CHECKPOINT_TRIES):
            quiet = not self._pending or attempt >= QUIET_TRIES
            if quiet and await self._outside_transaction(_checkpoint):
                return
            await asyncio.sleep(CHECKPOINT_RETRY_S)  # writes are waiting, or a reader holds the WAL
        log.info("the WAL of %s stays until a later checkpoint: readers kept it busy", self.path)

    # -- events ----------------------------------------------------------------

    async def append(self, groups: Sequence[AppendGroup]) -> list[AppendResult]:
        if not groups:
            return []
        # one work: the batch's groups share its savepoint, as they share a transaction
        return await self._write(lambda db: _append(db, groups, self._run_states, self.max_run_bytes))

    async def read_events(self, run_id: str, after: int, limit: int) -> list[Event]:
        def query(db: sqlite3.Connection) -> list[Event]:
            rows = db.execute(
                "SELECT seq, type, data, ts FROM events"
                " WHERE run_pk = (SELECT created_seq FROM runs WHERE run_id = ?) AND seq > ? ORDER BY seq LIMIT ?",
                (run_id, after, max(limit, 0)),  # a negative LIMIT would mean "no limit"
            )
            # built in the reader thread: the loop gets ready events
            return [Event(run_id, seq, type_, data, ts) for seq, type_, data, ts in rows]

        return await self._query(query)
