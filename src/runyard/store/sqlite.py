"""``sqlite:///path.db``: the embedded default, one file in WAL mode.

One writer connection takes every write, one transaction at a time (an
``asyncio.Lock``), so ``append`` numbers events from ``last_seq`` without races.
A small pool of reader connections serves reads; WAL lets them proceed while a
write is in flight, so a long replay never queues behind the writers.

``aiosqlite`` runs each connection in its own thread and every ``await`` on one
is a thread hop, so ``append`` spends a fixed handful of them per batch however
many runs and events it holds. ``sqlite:///:memory:`` has a single connection
(a second one would open another, empty database), so there reads wait for
writes to finish.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import aiosqlite
import orjson

from runyard.errors import ConfigurationError, StoreError
from runyard.models import Event, Message, Run, RunError, RunStatus, RunUpdate, Session, StatusConflict
from runyard.store.base import AppendGroup, AppendResult, Store

T = TypeVar("T")

READERS = 2
BUSY_TIMEOUT_MS = 5_000

# Append-only: the position is the version. Never edit an entry; add one.
MIGRATIONS: list[str] = [
    """CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        created_at REAL NOT NULL,
        last_activity REAL NOT NULL,
        metadata TEXT NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID""",
    "CREATE INDEX sessions_last_activity ON sessions (last_activity)",
    """CREATE TABLE messages (
        message_id INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL,
        role TEXT NOT NULL,
        content TEXT,
        ts REAL NOT NULL,
        extra TEXT NOT NULL
    )""",
    "CREATE INDEX messages_session ON messages (session_id, message_id)",
    # created_seq is the rowid: creation order, which listing follows even when created_at ties
    """CREATE TABLE runs (
        created_seq INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL UNIQUE,
        session_id TEXT NOT NULL,
        owner TEXT NOT NULL,
        pipeline TEXT NOT NULL,
        status TEXT NOT NULL,
        input TEXT,
        output TEXT,
        error TEXT,
        metadata TEXT NOT NULL,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        last_seq INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        timeout_s REAL,
        max_attempts INTEGER NOT NULL,
        worker_id TEXT,
        lease_expires_at REAL
    )""",
    "CREATE INDEX runs_owner ON runs (owner, created_seq)",
    "CREATE INDEX runs_session ON runs (session_id, created_seq)",
    "CREATE INDEX runs_status ON runs (status, created_seq)",
    "CREATE INDEX runs_finished_at ON runs (finished_at) WHERE finished_at IS NOT NULL",
    """CREATE TABLE events (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        type TEXT NOT NULL,
        data BLOB NOT NULL,
        ts REAL NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID""",
]

RUN_COLUMNS = (
    "run_id, session_id, owner, pipeline, status, input, output, error, metadata, created_at,"
    " started_at, finished_at, last_seq, attempt, timeout_s, max_attempts, worker_id, lease_expires_at"
)
SESSION_COLUMNS = "session_id, owner, created_at, last_activity, metadata, deleted"
INSERT_RUN = f"INSERT INTO runs ({RUN_COLUMNS}) VALUES ({', '.join('?' * (RUN_COLUMNS.count(',') + 1))})"
INSERT_SESSION = f"INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
FINISHED = "status NOT IN ('queued', 'running')"
# a list travels as one JSON parameter: one cached statement whatever its length, no variable limit
IN_JSON = "IN (SELECT value FROM json_each(?))"


def _dump(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _load(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def _run_row(run: Run) -> tuple[Any, ...]:
    return (
        run.run_id,
        run.session_id,
        run.owner,
        run.pipeline,
        run.status.value,
        _dump(run.input),
        _dump(run.output),
        _dump(run.error.to_dict()) if run.error else None,
        _dump(run.metadata),
        run.created_at,
        run.started_at,
        run.finished_at,
        run.last_seq,
        run.attempt,
        run.timeout_s,
        run.max_attempts,
        run.worker_id,
        run.lease_expires_at,
    )


def _run(row: Sequence[Any]) -> Run:
    error = _load(row[7])
    return Run(
        run_id=row[0],
        session_id=row[1],
        owner=row[2],
        pipeline=row[3],
        status=RunStatus(row[4]),
        input=_load(row[5]),
        output=_load(row[6]),
        error=RunError(**error) if error else None,
        metadata=_load(row[8]),
        created_at=row[9],
        started_at=row[10],
        finished_at=row[11],
        last_seq=row[12],
        attempt=row[13],
        timeout_s=row[14],
        max_attempts=row[15],
        worker_id=row[16],
        lease_expires_at=row[17],
    )


def _session_row(session: Session) -> tuple[Any, ...]:
    return (
        session.session_id,
        session.owner,
        session.created_at,
        session.last_activity,
        _dump(session.metadata),
        int(session.deleted),
    )


def _update_columns(update: RunUpdate) -> dict[str, Any]:
    """The columns ``update`` sets, exactly as ``memory.apply_update`` sets the fields."""
    columns: dict[str, Any] = {}
    if update.status is not None:
        columns["status"] = update.status.value
    if update.set_output:
        columns["output"] = _dump(update.output)
    if update.error is not None:
        columns["error"] = _dump(update.error.to_dict())
    if update.started_at is not None:
        columns["started_at"] = update.started_at
    if update.finished_at is not None:
        columns["finished_at"] = update.finished_at
    if update.attempt is not None:
        columns["attempt"] = update.attempt
    if update.clear_lease:
        columns["worker_id"] = None
        columns["lease_expires_at"] = None
    if update.worker_id is not None:
        columns["worker_id"] = update.worker_id
    if update.lease_expires_at is not None:
        columns["lease_expires_at"] = update.lease_expires_at
    return columns


def _json_list(values: Iterable[str]) -> str:
    return orjson.dumps(list(values)).decode()


def database_path(url: str) -> str:
    """``sqlite:///x.db`` → ``x.db`` (relative to the working directory), ``sqlite:////abs.db``
    → ``/abs.db``, ``sqlite:///:memory:`` (or ``sqlite://``) → ``:memory:``."""
    if url == "sqlite://":
        return ":memory:"
    if not url.startswith("sqlite:///") or url == "sqlite:///":
        raise ConfigurationError(f"bad SQLite URL {url!r}: use sqlite:///relative.db or sqlite:////abs.db")
    return url.removeprefix("sqlite:///")


class _RunState:
    """A run's status and last seq while one ``append`` batch numbers its events."""

    __slots__ = ("last_seq", "status")

    def __init__(self, status: RunStatus, last_seq: int) -> None:
        self.status = status
        self.last_seq = last_seq


class SQLiteStore(Store):
    """A SQLite file in WAL mode: one serialised writer, a pool of readers."""

    def __init__(self, url: str = "sqlite:///./runyard.db", readers: int = READERS) -> None:
        self.url = url
        self.path = database_path(url)
        self._memory = self.path == ":memory:"
        self._reader_count = readers
        self._db: aiosqlite.Connection | None = None
        self._readers: list[aiosqlite.Connection] = []
        self._idle: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._write_lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        if self._db is not None:
            return
        self._db = await self._connect(
            f"PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = {BUSY_TIMEOUT_MS};"
        )
        try:
            await self.migrate()
            if not self._memory:
                for _ in range(self._reader_count):
                    reader = await self._connect(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}; PRAGMA query_only = ON;")
                    self._readers.append(reader)
                    self._idle.put_nowait(reader)
        except BaseException:
            await self.close()
            raise

    async def _connect(self, pragmas: str) -> aiosqlite.Connection:
        try:
            # isolation_level=None: transactions are begun and ended here, never implicitly
            db = await aiosqlite.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        try:
            await db.executescript(pragmas)
        except BaseException:
            await db.close()
            raise
        return db

    async def close(self) -> None:
        async with self._write_lock:  # let the transaction in flight finish
            readers, self._readers, self._idle = self._readers, [], asyncio.Queue()
            for reader in readers:
                await reader.close()
            if self._db is not None:
                db, self._db = self._db, None
                await db.close()

    async def ping(self) -> None:
        await self._writer.execute("SELECT 1")

    async def migrate(self) -> int:
        return await self._write(self._migrate)

    async def _migrate(self, db: aiosqlite.Connection) -> int:
        await db.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        rows = list(await db.execute_fetchall("SELECT coalesce(max(version), 0) FROM schema_version"))
        current: int = rows[0][0]
        if current > len(MIGRATIONS):
            raise StoreError(f"{self.path} has schema version {current}, newer than this runyard's {len(MIGRATIONS)}")
        for statement in MIGRATIONS[current:]:
            await db.execute(statement)
        applied = [(version, time.time()) for version in range(current + 1, len(MIGRATIONS) + 1)]
        if applied:
            await db.executemany("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", applied)
        return len(MIGRATIONS)

    # -- plumbing --------------------------------------------------------------

    @property
    def _writer(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError(f"store {self.url} is not open")
        return self._db

    async def _write(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``work`` in one transaction on the writer connection."""
        # shielded: a cancelled caller stops waiting, but never leaves the shared
        # writer inside a half-done transaction
        return await asyncio.shield(self._transaction(work))

    async def _transaction(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        async with self._write_lock:
            db = self._writer
            await db.execute("BEGIN IMMEDIATE")
            try:
                result = await work(db)
                await db.commit()
            except BaseException:
                if db.in_transaction:
                    await db.rollback()
                raise
            return result

    async def _read(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        """All rows of one query, from an idle reader connection."""
        if self._memory:
            async with self._write_lock:
                return list(await self._writer.execute_fetchall(sql, parameters))
        if not self._readers:
            raise StoreError(f"store {self.url} is not open")
        reader = await self._idle.get()
        try:
            return list(await reader.execute_fetchall(sql, parameters))
        finally:
            self._idle.put_nowait(reader)

    async def _execute(self, sql: str, parameters: Sequence[Any] = ()) -> None:
        """One statement in its own transaction."""

        async def work(db: aiosqlite.Connection) -> None:
            await db.execute(sql, parameters)

        return await self._write(work)

    # -- sessions and memory ---------------------------------------------------

    async def create_session(self, session: Session) -> None:
        await self._execute(INSERT_SESSION, _session_row(session))

    async def get_session(self, session_id: str) -> Session | None:
        rows = await self._read(f"SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = ?", (session_id,))
        if not rows:
            return None
        row = rows[0]
        return Session(row[0], row[1], row[2], row[3], _load(row[4]), bool(row[5]))

    async def touch_session(self, session_id: str, at: float) -> None:
        await self._execute(
            "UPDATE sessions SET last_activity = max(last_activity, ?) WHERE session_id = ?", (at, session_id)
        )

    async def delete_session(self, session_id: str) -> None:
        async def work(db: aiosqlite.Connection) -> None:
            await db.execute("UPDATE sessions SET deleted = 1 WHERE session_id = ?", (session_id,))
            await db.execute("DELETE FROM messages WHERE session_id = ?", (session_id,))

        await self._write(work)

    async def forget_idle_sessions(self, idle_before: float) -> int:
        # a session with a run still queued or running is busy, never idle
        idle = (
            "SELECT session_id FROM sessions s WHERE last_activity < ? AND NOT EXISTS "
            "(SELECT 1 FROM runs r WHERE r.session_id = s.session_id AND r.status IN ('queued', 'running'))"
        )

        async def work(db: aiosqlite.Connection) -> int:
            rows = list(
                await db.execute_fetchall(
                    f"SELECT count(DISTINCT session_id) FROM messages WHERE session_id IN ({idle})",
                    (idle_before,),
                )
            )
            await db.execute(f"DELETE FROM messages WHERE session_id IN ({idle})", (idle_before,))
            forgotten: int = rows[0][0]
            return forgotten

        return await self._write(work)

    async def history(self, session_id: str) -> list[Message]:
        rows = await self._read(
            "SELECT role, content, ts, extra FROM messages WHERE session_id = ? ORDER BY message_id",
            (session_id,),
        )
        return [Message(row[0], _load(row[1]), row[2], _load(row[3])) for row in rows]

    async def append_message(self, session_id: str, message: Message, keep: int) -> None:
        async def work(db: aiosqlite.Connection) -> None:
            await db.execute(
                "INSERT INTO messages (session_id, role, content, ts, extra) VALUES (?, ?, ?, ?, ?)",
                (session_id, message.role, _dump(message.content), message.ts, _dump(message.extra)),
            )
            # everything at or below the (keep + 1)-th newest goes
            await db.execute(
                "DELETE FROM messages WHERE session_id = ? AND message_id <= (SELECT message_id FROM messages"
                " WHERE session_id = ? ORDER BY message_id DESC LIMIT 1 OFFSET ?)",
                (session_id, session_id, max(keep, 0)),
            )

        await self._write(work)

    # -- runs ------------------------------------------------------------------

    async def create_run(self, run: Run, new_session: Session | None = None) -> None:
        async def work(db: aiosqlite.Connection) -> None:
            if new_session is not None:
                await db.execute(INSERT_SESSION, _session_row(new_session))
            await db.execute(INSERT_RUN, _run_row(run))

        await self._write(work)

    async def get_run(self, run_id: str) -> Run | None:
        rows = await self._read(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
        return _run(rows[0]) if rows else None

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
            parameters.append(_json_list(s.value for s in statuses))
        if before is not None:
            # an unknown cursor compares with NULL: nothing is older than it
            where.append("created_seq < (SELECT created_seq FROM runs WHERE run_id = ?)")
            parameters.append(before)
        rows = await self._read(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE {' AND '.join(where)} ORDER BY created_seq DESC LIMIT ?",
            (*parameters, max(limit, 0)),
        )
        return [_run(row) for row in rows]

    async def runs_with_status(self, statuses: Iterable[RunStatus]) -> list[Run]:
        rows = await self._read(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE status {IN_JSON} ORDER BY created_seq",
            (_json_list(s.value for s in statuses),),
        )
        return [_run(row) for row in rows]

    async def unfinished_runs(self, session_id: str) -> list[Run]:
        rows = await self._read(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE session_id = ? AND NOT {FINISHED} ORDER BY created_seq",
            (session_id,),
        )
        return [_run(row) for row in rows]

    async def expired_leases(self, at: float) -> list[Run]:
        rows = await self._read(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE status = 'running' AND lease_expires_at < ? ORDER BY created_seq",
            (at,),
        )
        return [_run(row) for row in rows]

    async def renew_leases(self, worker_id: str, run_ids: Sequence[str], until: float) -> None:
        if run_ids:
            await self._execute(
                f"UPDATE runs SET lease_expires_at = ? WHERE run_id {IN_JSON} AND status = 'running' AND worker_id = ?",
                (until, _json_list(run_ids), worker_id),
            )

    async def sweep_runs(self, finished_before: float) -> int:
        old = f"{FINISHED} AND finished_at < ?"

        async def work(db: aiosqlite.Connection) -> int:
            await db.execute(
                f"DELETE FROM events WHERE run_id IN (SELECT run_id FROM runs WHERE {old})",
                (finished_before,),
            )
            cursor = await db.execute(f"DELETE FROM runs WHERE {old}", (finished_before,))
            return cursor.rowcount

        return await self._write(work)

    # -- events ----------------------------------------------------------------

    async def append(self, groups: Sequence[AppendGroup]) -> list[AppendResult]:
        if not groups:
            return []

        async def work(db: aiosqlite.Connection) -> list[AppendResult]:
            return await self._append(db, groups)

        return await self._write(work)

    async def _append(self, db: aiosqlite.Connection, groups: Sequence[AppendGroup]) -> list[AppendResult]:
        # hops per batch: one SELECT, one INSERT of every event, one UPDATE per shape of change
        run_ids = list(dict.fromkeys(group.run_id for group in groups))
        rows = await db.execute_fetchall(
            f"SELECT run_id, status, last_seq FROM runs WHERE run_id {IN_JSON}", (_json_list(run_ids),)
        )
        state = {row[0]: _RunState(RunStatus(row[1]), row[2]) for row in rows}
        results: list[AppendResult] = []
        event_rows: list[tuple[str, int, str, bytes, float]] = []
        changes: dict[str, dict[str, Any]] = {}  # run_id → column → value, later groups winning
        for group in groups:
            run = state.get(group.run_id)
            update = group.update
            if run is None:
                results.append(StatusConflict(group.run_id, None))
                continue
            if update is not None and update.expect is not None and run.status not in update.expect:
                results.append(StatusConflict(group.run_id, run.status))
                continue
            events = []
            for draft in group.drafts:
                run.last_seq += 1
                events.append(Event(group.run_id, run.last_seq, draft.type, draft.data, draft.ts))
                event_rows.append((group.run_id, run.last_seq, draft.type, draft.data, draft.ts))
            columns = changes.setdefault(group.run_id, {})
            if events:
                columns["last_seq"] = run.last_seq
            if update is not None:
                columns.update(_update_columns(update))
                run.status = update.status or run.status
            results.append(events)
        if event_rows:
            await db.executemany("INSERT INTO events (run_id, seq, type, data, ts) VALUES (?, ?, ?, ?, ?)", event_rows)
        shapes: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for run_id, columns in changes.items():
            if columns:
                shape = tuple(sorted(columns))
                shapes.setdefault(shape, []).append((*(columns[c] for c in shape), run_id))
        for shape, parameters in shapes.items():
            assignments = ", ".join(f"{column} = ?" for column in shape)
            await db.executemany(f"UPDATE runs SET {assignments} WHERE run_id = ?", parameters)
        return results

    async def read_events(self, run_id: str, after: int, limit: int) -> list[Event]:
        rows = await self._read(
            "SELECT seq, type, data, ts FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (run_id, after, max(limit, 0)),  # a negative LIMIT would mean "no limit"
        )
        return [Event(run_id, seq, type_, data, ts) for seq, type_, data, ts in rows]
