"""The SQLite store's event logs: gap-free numbering in the writer thread, replay from a reader."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from runyard.models import Event, RunStatus, session_channel
from runyard.store._numbering import RunState, finished_webhooks, number, recorded_steps
from runyard.store._rows import EVENT_COLUMNS, json_list, load_wait, step_row, update_columns
from runyard.store.base import AppendGroup, AppendResult, EventStore
from runyard.store.sqlite.connection import RunStates, SQLiteConnection
from runyard.store.sqlite.outbox import QUEUE_DELIVERY
from runyard.store.sqlite.schema import EVENT_CHUNK, IN_JSON, INSERT_STEP, LAST_SEQ, STORED_BYTES, insert_events

# A page of a run's events (its parameters: run id, after, limit), and whether it
# weighs at most the first parameter (length() of a BLOB reads no overflow page)
PAGE = "events WHERE run_pk = (SELECT created_seq FROM runs WHERE run_id = ?) AND seq > ? ORDER BY seq LIMIT ?"
SMALL_PAGE = f"SELECT coalesce(sum(length(data)), 0) <= ? FROM (SELECT data FROM {PAGE})"
# whether a run has an event past the parameter's seq: one index seek
BEYOND = "SELECT 1 FROM events WHERE run_pk = (SELECT created_seq FROM runs WHERE run_id = ?) AND seq > ? LIMIT 1"
GLANCE_ROWS = 64  # a page of at most this many events...
GLANCE_BYTES = 16 * 1024  # ...weighing at most this much is read in the loop (``_glance``)


def append_batch(
    db: sqlite3.Connection, groups: Sequence[AppendGroup], known: RunStates, max_run_bytes: int | None = None
) -> list[AppendResult]:
    """Number and insert the groups' events. ``known`` caches unfinished runs'
    states across batches (its keys: run ids): exact, because the writer
    thread, which alone calls this, is the only writer and every status change
    passes through here. Numbering updates the cached states in place: if any
    write of the transaction is then rolled back, the writer forgets the whole
    cache (``group_commit.commit``'s ``forget``), and the next batch loads its
    runs again."""
    batch: RunStates = {}
    missing = []
    for run_id in dict.fromkeys(group.run_id for group in groups):
        state = known.get(run_id)
        if state is None:
            missing.append(run_id)
        else:
            batch[run_id] = state
    if missing:
        rows = db.execute(
            f"SELECT run_id, created_seq, status, {LAST_SEQ}, worker_id, attempt, lease_expires_at, {STORED_BYTES},"
            f" waiting, webhook, owner, session_id FROM runs WHERE run_id {IN_JSON}",
            (json_list(missing),),
        )
        batch.update(
            (
                run_id,
                RunState(
                    RunStatus(status),
                    seq,
                    pk,
                    worker,
                    attempt,
                    lease,
                    stored,
                    load_wait(waiting),
                    hook,
                    session=session_channel(owner, session_id),
                ),
            )
            for run_id, pk, status, seq, worker, attempt, lease, stored, waiting, hook, owner, session_id in rows
        )
    results, events = number(groups, batch, max_run_bytes)
    if events:
        _insert_events(db, _event_rows(groups, results, events, batch))
    steps = recorded_steps(groups, results)
    if steps:
        db.executemany(INSERT_STEP, [(batch[run_id].key, *step_row(step)) for run_id, step in steps])
    owed = finished_webhooks(batch)
    if owed:
        at = time.time()
        db.executemany(QUEUE_DELIVERY, [(run_id, url, at, at) for run_id, url in owed])
    for run_id, run in batch.items():
        columns = update_columns(run.updates)
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


EventRow = tuple[int, int, str, bytes, float, int | None]


def _event_rows(
    groups: Sequence[AppendGroup], results: Sequence[AppendResult], events: list[Event], batch: RunStates
) -> list[EventRow]:
    """The numbered events as rows, each with its draft's ``pos`` (an ``Event``
    has none): numbering made one event per draft of each written group, in order.
    Two flat comprehensions: one per group cost 12x as much (measured, 1,000 groups)."""
    drafts = [
        draft
        for group, result in zip(groups, results, strict=True)
        if isinstance(result, list)
        for draft in group.drafts
    ]
    return [(batch[e.run_id].key, e.seq, e.type, e.data, e.ts, d.pos) for e, d in zip(events, drafts, strict=True)]


def _insert_events(db: sqlite3.Connection, rows: list[EventRow]) -> None:
    start = 0
    while start < len(rows):
        size = min(EVENT_CHUNK, 1 << ((len(rows) - start).bit_length() - 1))
        chunk = rows[start : start + size]
        db.execute(insert_events(size), [value for row in chunk for value in row])
        start += size


class SQLiteEvents(SQLiteConnection, EventStore):
    """``EventStore`` on SQLite."""

    async def append(self, groups: Sequence[AppendGroup]) -> list[AppendResult]:
        if not groups:
            return []
        # one work: the batch's groups share its savepoint, as they share a transaction
        return await self._write(lambda db: append_batch(db, groups, self._run_states, self.max_run_bytes))

    async def read_events(self, run_id: str, after: int, limit: int) -> list[Event]:
        page = (run_id, after, max(limit, 0))  # a negative LIMIT would mean "no limit"

        def query(db: sqlite3.Connection) -> list[Event]:
            rows = db.execute(f"SELECT {EVENT_COLUMNS} FROM {PAGE}", page)
            return [Event(run_id, seq, type_, data, ts) for seq, type_, data, ts in rows]

        def glance(db: sqlite3.Connection) -> list[Event] | None:
            """The page, if it is small: a stream's first page, or what is left of
            a short history however large a page was asked for; else None. A
            replay's pages are sized in bytes, 64 KiB and more: read in the loop,
            2,000 followers of one history held its turns long (``/healthz`` p99 12
            -> 84 ms in ``bench/hostile.py``'s readers). Seqs are unique: with no
            event past ``after + GLANCE_ROWS``, at most that many are left."""
            if limit > GLANCE_ROWS and db.execute(BEYOND, (run_id, after + GLANCE_ROWS)).fetchone():
                return None
            small = db.execute(SMALL_PAGE, (GLANCE_BYTES, run_id, after, min(page[2], GLANCE_ROWS))).fetchone()[0]
            return query(db) if small else None

        events = await self._glance(glance)
        return events if events is not None else await self._query(query)
