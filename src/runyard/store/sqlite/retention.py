"""The SQLite store's retention: sweeps in short writes, then the space given back.

``_sweep`` cuts a sweep into chunks; here each chunk is a write of its own, queued
behind the writes waiting then, and the freed pages go back to the file system
(``incremental_vacuum``) and the WAL is truncated, in short steps too."""

from __future__ import annotations

import asyncio
import functools
import sqlite3

import orjson

from runyard.store._sweep import CHUNK_BYTES, CHUNK_EVENTS, SWEEP_RUNS, chunk_end, pack
from runyard.store.base import Retention
from runyard.store.sqlite.connection import SQLiteConnection, log
from runyard.store.sqlite.schema import (
    BUCKET_BITS,
    EVENT_WEIGHTS,
    FINISHED,
    IN_JSON,
    LISTED_RUNS_EVENTS,
    STEP_BYTES,
    STEP_WEIGHTS,
    UNFINISHED_SQL,
    bucket_of,
    run_buckets,
)

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


# The events of run :pk in buckets :first to :last, by seq; and those up to seq :upto
_CHUNK_BUCKETS = f"{bucket_of('seq')} IN {run_buckets(':first', ':last')} AND run_pk = :pk"
CHUNK_SIZES = f"SELECT seq, length(data) FROM events WHERE {_CHUNK_BUCKETS} ORDER BY seq LIMIT :limit"
DELETE_CHUNK = f"DELETE FROM events WHERE {_CHUNK_BUCKETS} AND seq <= :upto"
HAS_BUCKET = f"SELECT 1 FROM events WHERE {bucket_of('seq')} = ? AND run_pk = ? LIMIT 1"
# every event of the runs in the JSON list
DELETE_EVENTS = f"DELETE FROM events WHERE rowid IN (SELECT events.rowid FROM {LISTED_RUNS_EVENTS})"


def _delete_event_chunk(db: sqlite3.Connection, run_pk: int) -> bool:
    """Delete the run's oldest events, one chunk (``_sweep``); whether any may be left
    (a small run takes one write, not two)."""
    first = _oldest_bucket(db, run_pk)
    if first is None:
        return False
    # the chunk's buckets: two more than CHUNK_EVENTS fill, so that they hold that
    # many whenever so many are left, though the last chunk swept part of the first
    last = first + (CHUNK_EVENTS >> BUCKET_BITS) + 1
    where = {"pk": run_pk, "first": first, "last": last}
    sizes = db.execute(CHUNK_SIZES, {**where, "limit": CHUNK_EVENTS}).fetchall()
    if not sizes:
        return False
    upto = chunk_end(sizes, CHUNK_BYTES)
    db.execute(DELETE_CHUNK, {**where, "upto": upto})
    return upto < sizes[-1][0] or len(sizes) == CHUNK_EVENTS


def _oldest_bucket(db: sqlite3.Connection, run_pk: int) -> int | None:
    """The first bucket holding an event of the run (None: no event). A sweep
    deletes a run's events oldest first, so what is left of them is a run of seqs
    up to the last: the buckets holding any are those from one on, found by
    halving (a walk from bucket 0 would grow with what was swept)."""
    row = db.execute("SELECT last_bucket FROM runs WHERE created_seq = ?", (run_pk,)).fetchone()
    if row is None or row[0] is None:
        return None
    low, high = 0, row[0]
    while low < high:
        middle = (low + high) // 2
        if db.execute(HAS_BUCKET, (middle, run_pk)).fetchone():
            high = middle
        else:
            low = middle + 1
    return low if db.execute(HAS_BUCKET, (low, run_pk)).fetchone() else None


def _delete_step_chunk(db: sqlite3.Connection, run_pk: int) -> bool:
    """Delete one chunk of the run's recorded steps (as ``_delete_event_chunk``
    does its events: a step's result may weigh as much); whether any may be left."""
    sizes = db.execute(
        f"SELECT {STEP_BYTES} FROM steps WHERE run_pk = ? ORDER BY name, n LIMIT ?", (run_pk, CHUNK_EVENTS)
    ).fetchall()
    if not sizes:
        return False
    # chunk_end by position in the chunk (steps have no seq)
    count = chunk_end([(i, size) for i, (size,) in enumerate(sizes)], CHUNK_BYTES) + 1
    db.execute(
        "DELETE FROM steps WHERE (run_pk, name, n) IN"
        " (SELECT run_pk, name, n FROM steps WHERE run_pk = ? ORDER BY name, n LIMIT ?)",
        (run_pk, count),
    )
    return count < len(sizes) or len(sizes) == CHUNK_EVENTS


def _delete_runs(db: sqlite3.Connection, run_pks: list[int]) -> int:
    """Delete runs whose events are gone (and any event or step written meanwhile)."""
    keys = orjson.dumps(run_pks).decode()
    db.execute(DELETE_EVENTS, (keys,))
    db.execute(f"DELETE FROM steps WHERE run_pk {IN_JSON}", (keys,))
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


class SQLiteRetention(SQLiteConnection, Retention):
    """``Retention`` on SQLite."""

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
            weights = await self._weights([pk for (pk,) in rows])
            small, large = pack([(pk, *weights.get(pk, (0, 0))) for (pk,) in rows], CHUNK_EVENTS, CHUNK_BYTES)
            for run_pks in small:  # several small runs, events, steps and all, in one write
                swept += await self._write(functools.partial(_delete_runs, run_pks=run_pks))
            for run_pk in large:  # a large one chunk by chunk
                while await self._write(functools.partial(_delete_event_chunk, run_pk=run_pk)):
                    pass
                while await self._write(functools.partial(_delete_step_chunk, run_pk=run_pk)):
                    pass
                swept += await self._write(functools.partial(_delete_runs, run_pks=[run_pk]))
        # also when a sweep was cut short (a restart) after deleting, before giving back;
        # not for a few free pages (other deletes leave some): each time truncates the WAL
        if swept or (self._incremental and not self._memory and await self._free_pages() >= VACUUM_PAGES):
            await self._give_back_space()
        return swept

    async def _weights(self, run_pks: list[int]) -> dict[int, tuple[int, int]]:
        """Each run's events and steps: how many, and their bytes."""
        keys = orjson.dumps(run_pks).decode()
        weights: dict[int, tuple[int, int]] = {}
        for sql in (EVENT_WEIGHTS, STEP_WEIGHTS):
            for pk, count, size in await self._read(sql, (keys,)):
                before = weights.get(pk, (0, 0))
                weights[pk] = (before[0] + count, before[1] + size)
        return weights

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
            quiet = not self._writes_waiting or attempt >= QUIET_TRIES
            if quiet and await self._outside_transaction(_checkpoint):
                return
            await asyncio.sleep(CHECKPOINT_RETRY_S)  # writes are waiting, or a reader holds the WAL
        log.info("the WAL of %s stays until a later checkpoint: readers kept it busy", self.path)

    async def forget_idle_sessions(self, idle_before: float) -> int:
        # a session with an unfinished run (queued, running or waiting) is busy, never idle
        idle = (
            "SELECT session_id FROM sessions s WHERE last_activity < ? AND NOT EXISTS "
            f"(SELECT 1 FROM runs r WHERE r.session_id = s.session_id AND r.{UNFINISHED_SQL})"
        )

        def work(db: sqlite3.Connection) -> int:
            forgotten: int = db.execute(
                f"SELECT count(DISTINCT session_id) FROM messages WHERE session_id IN ({idle})", (idle_before,)
            ).fetchone()[0]
            db.execute(f"DELETE FROM messages WHERE session_id IN ({idle})", (idle_before,))
            return forgotten

        return await self._write(work)

    async def forget_idempotency_keys(self, before: float) -> int:
        return await self._write(
            lambda db: db.execute("DELETE FROM idempotency_keys WHERE created_at < ?", (before,)).rowcount
        )
