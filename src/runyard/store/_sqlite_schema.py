"""The SQLite store's schema, its migrations, and the codecs between rows and models."""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from runyard.errors import StoreError
from runyard.models import Run, RunError, RunStatus, RunUpdate, Session
from runyard.store._numbering import EVENT_OVERHEAD

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
    # Events in arrival order (rowid), found by (run key, seq): a batch holding one
    # event of each of 1,000 runs then touches a few pages, not one per run
    # (measured: 3.8 ms a batch instead of 18 ms; replay 1.3 M events/s).
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        run_pk INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        type TEXT NOT NULL,
        data BLOB NOT NULL,
        ts REAL NOT NULL
    )""",
    "CREATE UNIQUE INDEX events_run_seq ON events (run_pk, seq)",
    "ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0",
    # when each owner was last served, for the claim's tie-break: one index seek per owner
    "CREATE INDEX runs_owner_started ON runs (owner, started_at)",
    # RUNYARD_QUOTA_RUNS: runs each owner created while a quota was set (runs may be swept; this stays)
    "CREATE TABLE owner_quota (owner TEXT PRIMARY KEY, runs_created INTEGER NOT NULL) WITHOUT ROWID",
    """CREATE TABLE idempotency_keys (
        owner TEXT NOT NULL,
        key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        run_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (owner, key)
    ) WITHOUT ROWID""",
    "CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at)",
    # the workers that claim runs, and the pipelines each serves (a JSON list): what
    # says which queued runs no live worker will ever claim
    "CREATE TABLE workers (worker_id TEXT PRIMARY KEY, pipelines TEXT NOT NULL, last_seen REAL NOT NULL) WITHOUT ROWID",
]

_STORED_RUN_COLUMNS = (
    "run_id, session_id, owner, pipeline, status, input, output, error, metadata, created_at,"
    " started_at, finished_at, attempt, timeout_s, max_attempts, worker_id, lease_expires_at"
)
# A run's last seq is read from its events (one index seek), never stored in the
# runs row: bumping it there cost a random row rewrite per run per event batch.
LAST_SEQ = "(SELECT coalesce(max(seq), 0) FROM events WHERE events.run_pk = runs.created_seq)"
# Likewise a run's stored bytes (``event_size`` summed), read only when a run is not
# in the writer's cache (its claim, or after a restart): length() of a BLOB reads
# the row's header, never its overflow pages, so this costs one row per event.
STORED_BYTES = (
    f"(SELECT coalesce(sum(length(data) + length(type)), 0) + count(*) * {EVENT_OVERHEAD}"
    " FROM events WHERE events.run_pk = runs.created_seq)"
)
RUN_COLUMNS = _STORED_RUN_COLUMNS.replace("finished_at, attempt", f"finished_at, {LAST_SEQ}, attempt")
SESSION_COLUMNS = "session_id, owner, created_at, last_activity, metadata, deleted"
INSERT_RUN = (
    f"INSERT INTO runs ({_STORED_RUN_COLUMNS}) VALUES ({', '.join('?' * (_STORED_RUN_COLUMNS.count(',') + 1))})"
)
INSERT_SESSION = f"INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
EVENT_CHUNK = 256  # rows per multi-row INSERT
FINISHED = "status NOT IN ('queued', 'running')"
# The ready runs (each the oldest unfinished run of its session, of a pipeline the
# claiming worker serves: the JSON list parameter), fairest first:
# an owner's n-th ready run takes turn (its running runs + n); ties go to the
# owner served least recently, then to the oldest run.
CLAIMABLE = f"""WITH heads AS (
    SELECT min(created_seq) AS first FROM runs WHERE status IN ('queued', 'running') GROUP BY session_id
), busy AS (
    SELECT owner, count(*) AS running FROM runs WHERE status = 'running' GROUP BY owner
), ready AS (
    SELECT r.created_seq, r.owner,
        coalesce(b.running, 0) + row_number() OVER (PARTITION BY r.owner ORDER BY r.created_seq) AS turn
    FROM heads h JOIN runs r ON r.created_seq = h.first LEFT JOIN busy b ON b.owner = r.owner
    WHERE r.status = 'queued' AND r.pipeline IN (SELECT value FROM json_each(?))
), served AS (
    SELECT o.owner, (SELECT max(started_at) FROM runs s WHERE s.owner = o.owner) AS last
    FROM (SELECT DISTINCT owner FROM ready) o
), chosen AS (
    SELECT created_seq, turn, last FROM ready JOIN served USING (owner) ORDER BY turn, last NULLS FIRST, created_seq
    LIMIT ?
)
SELECT {RUN_COLUMNS}, cancel_requested FROM chosen JOIN runs USING (created_seq)
ORDER BY turn, last NULLS FIRST, created_seq"""
# queued runs per pipeline that no worker seen since the parameter serves
UNSERVED = """SELECT pipeline, count(*) FROM runs WHERE status = 'queued' AND pipeline NOT IN
    (SELECT p.value FROM workers w, json_each(w.pipelines) p WHERE w.last_seen >= ?) GROUP BY pipeline"""
# a list travels as one JSON parameter: one cached statement whatever its length, no variable limit
IN_JSON = "IN (SELECT value FROM json_each(?))"


def migrate(db: sqlite3.Connection, path: str) -> int:
    """Apply the migrations ``db`` lacks (inside the caller's transaction); return the version."""
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
    current: int = db.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
    if current > len(MIGRATIONS):
        raise StoreError(f"{path} has schema version {current}, newer than this runyard's {len(MIGRATIONS)}")
    for statement in MIGRATIONS[current:]:
        db.execute(statement)
    applied = [(version, time.time()) for version in range(current + 1, len(MIGRATIONS) + 1)]
    db.executemany("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", applied)
    return len(MIGRATIONS)


def dump(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def load(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def json_list(values: Iterable[str]) -> str:
    return orjson.dumps(list(values)).decode()


def run_row(run: Run) -> tuple[Any, ...]:
    return (
        run.run_id,
        run.session_id,
        run.owner,
        run.pipeline,
        run.status.value,
        dump(run.input),
        dump(run.output),
        dump(run.error.to_dict()) if run.error else None,
        dump(run.metadata),
        run.created_at,
        run.started_at,
        run.finished_at,
        run.attempt,
        run.timeout_s,
        run.max_attempts,
        run.worker_id,
        run.lease_expires_at,
    )


def run_from_row(row: Sequence[Any]) -> Run:
    error = load(row[7])
    return Run(
        run_id=row[0],
        session_id=row[1],
        owner=row[2],
        pipeline=row[3],
        status=RunStatus(row[4]),
        input=load(row[5]),
        output=load(row[6]),
        error=RunError(**error) if error else None,
        metadata=load(row[8]),
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


def session_row(session: Session) -> tuple[Any, ...]:
    return (
        session.session_id,
        session.owner,
        session.created_at,
        session.last_activity,
        dump(session.metadata),
        int(session.deleted),
    )


def session_from_row(row: Sequence[Any]) -> Session:
    return Session(row[0], row[1], row[2], row[3], load(row[4]), bool(row[5]))


def update_columns(update: RunUpdate) -> dict[str, Any]:
    """The columns ``update`` sets, exactly as ``memory.apply_update`` sets the fields."""
    columns: dict[str, Any] = {}
    if update.status is not None:
        columns["status"] = update.status.value
    if update.set_output:
        columns["output"] = dump(update.output)
    if update.error is not None:
        columns["error"] = dump(update.error.to_dict())
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


def merged_columns(updates: Iterable[RunUpdate]) -> dict[str, Any]:
    """Several updates of one run as the columns they set, a later update winning."""
    columns: dict[str, Any] = {}
    for update in updates:
        columns.update(update_columns(update))
    return columns


@functools.lru_cache(maxsize=16)
def insert_events(rows: int) -> str:
    """A multi-row INSERT of ``rows`` events. One statement per chunk, not one per
    row: each step releases and re-takes the GIL, and with the event loop busy
    every re-take waits (measured: 1,000 rows by executemany 4.5 s, 49 ms as
    multi-row statements). Chunk sizes are powers of two, so few statements are
    prepared and all stay in the statement cache."""
    return "INSERT INTO events (run_pk, seq, type, data, ts) VALUES " + ",".join(["(?,?,?,?,?)"] * rows)
