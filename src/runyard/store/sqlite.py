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
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import BrokenExecutor, ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

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
from runyard.store.base import (
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

READERS = 2
BUSY_TIMEOUT_MS = 5_000
MAX_BATCH = 2_000  # writes per transaction: bounds a single commit's latency
# wal_autocheckpoint: checkpoint every ~40 MiB of WAL rather than 4 MiB, so that
# busy batches are not each followed by a checkpoint (measured: 3.0 vs 3.8 ms a batch)
WRITER_PRAGMAS = (
    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 10000;"
    f" PRAGMA busy_timeout = {BUSY_TIMEOUT_MS};"
)
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


def _append(db: sqlite3.Connection, groups: Sequence[AppendGroup], known: RunStates) -> list[AppendResult]:
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
            f"SELECT run_id, created_seq, status, {LAST_SEQ}, worker_id, attempt, lease_expires_at"
            f" FROM runs WHERE run_id {IN_JSON}",
            (json_list(missing),),
        )
        batch.update(
            (run_id, RunState(RunStatus(status), seq, pk, worker, attempt, lease))
            for run_id, pk, status, seq, worker, attempt, lease in rows
        )
    results, events = number(groups, batch)
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
    return RunState(state.status, state.last_seq, state.key, state.worker_id, state.attempt, state.lease_expires_at)


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

    def __init__(self, url: str = "sqlite:///./runyard.db", readers: int = READERS) -> None:
        self.url = url
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
            await self.migrate()
        except BaseException:
            await self.close()
            raise

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
        return await self._write(lambda db: migrate(db, self.path))

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
        old = f"{FINISHED} AND finished_at < ?"

        def work(db: sqlite3.Connection) -> int:
            db.execute(
                f"DELETE FROM events WHERE run_pk IN (SELECT created_seq FROM runs WHERE {old})", (finished_before,)
            )
            return db.execute(f"DELETE FROM runs WHERE {old}", (finished_before,)).rowcount

        return await self._write(work)

    # -- events ----------------------------------------------------------------

    async def append(self, groups: Sequence[AppendGroup]) -> list[AppendResult]:
        if not groups:
            return []
        # one work: the batch's groups share its savepoint, as they share a transaction
        return await self._write(lambda db: _append(db, groups, self._run_states))

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
