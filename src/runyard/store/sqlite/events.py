"""The SQLite store's event logs: gap-free numbering in the writer thread, replay from a reader."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from runyard.models import UNFINISHED, Event, RunStatus, session_channel
from runyard.store._numbering import RunState, finished_webhooks, number, recorded_steps
from runyard.store._rows import EVENT_COLUMNS, json_list, load_wait, step_row, update_columns
from runyard.store.base import AppendGroup, AppendResult, EventStore
from runyard.store.sqlite.connection import RunStates, SQLiteConnection
from runyard.store.sqlite.outbox import QUEUE_DELIVERY
from runyard.store.sqlite.schema import (
    BUCKET_BITS,
    EVENT_CHUNK,
    EVENT_ROW,
    IN_JSON,
    INSERT_STEP,
    LAST_SEQ,
    STORED_BYTES,
    bucket_of,
    insert_events,
    run_buckets,
)

# A page of a run's events (its parameters: run_id, after, limit), and whether it
# weighs at most :bytes (length() of a BLOB reads no overflow page). A run's seqs
# have no gaps, so the page is seqs after + 1 to after + limit at most: the buckets
# of those, up to the run's last.
_LAST_BUCKET = "(SELECT last_bucket FROM runs WHERE run_id = :run_id)"
_PAGE_BUCKETS = run_buckets(bucket_of(":after + 1"), f"min({bucket_of(':after + :limit')}, {_LAST_BUCKET})")
PAGE = (
    f"events WHERE {bucket_of('seq')} IN {_PAGE_BUCKETS}"
    " AND run_pk = (SELECT created_seq FROM runs WHERE run_id = :run_id) AND seq > :after ORDER BY seq LIMIT :limit"
)
SMALL_PAGE = f"SELECT coalesce(sum(length(data)), 0) <= :bytes FROM (SELECT data FROM {PAGE})"
# a run's last seq: two seeks (its row, its last bucket)
LAST_OF_RUN = f"SELECT {LAST_SEQ} FROM runs WHERE run_id = :run_id"
# a run's last bucket, when a batch numbered events into a new one (``_moved_on``)
SET_LAST_BUCKET = "UPDATE runs SET last_bucket = ? WHERE created_seq = ?"
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
    last_seqs = [(state, state.last_seq) for state in batch.values()]
    results, events = number(groups, batch, max_run_bytes)
    if events:
        _insert_events(db, _event_values(groups, results, events, batch))
        moved = _moved_on(last_seqs)
        if moved:
            db.executemany(SET_LAST_BUCKET, moved)
    steps = recorded_steps(groups, results)
    if steps:
        db.executemany(INSERT_STEP, [(batch[run_id].key, *step_row(step)) for run_id, step in steps])
    owed = finished_webhooks(batch)
    if owed:
        at = time.time()
        db.executemany(QUEUE_DELIVERY, [(run_id, url, at, at) for run_id, url in owed])
    for run_id, run in batch.items():
        if run.updates:
            columns = update_columns(run.updates)
            if columns:
                assignments = ", ".join(f"{column} = ?" for column in columns)
                db.execute(f"UPDATE runs SET {assignments} WHERE run_id = ?", (*columns.values(), run_id))
            run.updates = []
        if run.status in UNFINISHED:
            run.appended = False
            known[run_id] = run
        else:
            known.pop(run_id, None)  # it will not change again
    return results


def _moved_on(last_seqs: list[tuple[RunState, int]]) -> list[tuple[int, Any]]:
    """(last bucket, run key) of each run whose last event is in a later bucket than
    before the batch (``last_seqs``: each run's state and its last seq then)."""
    return [
        (state.last_seq >> BUCKET_BITS, state.key)
        for state, before in last_seqs
        if state.last_seq != before and (before == 0 or state.last_seq >> BUCKET_BITS != before >> BUCKET_BITS)
    ]


ROW = len(EVENT_ROW)


def _event_values(
    groups: Sequence[AppendGroup], results: Sequence[AppendResult], events: list[Event], batch: RunStates
) -> list[Any]:
    """The numbered events' rows, their values in one flat list (``EVENT_ROW``, as
    the multi-row INSERT binds them), each with its draft's ``pos`` (an ``Event``
    has none): numbering made one event per draft of each written group, in
    order. Flat loops: one per group cost 12x as much (measured, 1,000 groups),
    and rows as tuples then flattened 1.7x (165 against 97 ns an event, timeit)."""
    drafts = [
        draft
        for group, result in zip(groups, results, strict=True)
        if isinstance(result, list)
        for draft in group.drafts
    ]
    values: list[Any] = []
    add = values.extend
    for event, draft in zip(events, drafts, strict=True):
        add((batch[event.run_id].key, event.seq, event.type, event.data, event.ts, draft.pos))
    return values


def _insert_events(db: sqlite3.Connection, values: list[Any]) -> None:
    rows, start = len(values) // ROW, 0
    while start < rows:
        size = min(EVENT_CHUNK, 1 << ((rows - start).bit_length() - 1))
        db.execute(insert_events(size), values[start * ROW : (start + size) * ROW])
        start += size


class SQLiteEvents(SQLiteConnection, EventStore):
    """``EventStore`` on SQLite."""

    async def append(self, groups: Sequence[AppendGroup]) -> list[AppendResult]:
        if not groups:
            return []
        # one work: the batch's groups share its savepoint, as they share a transaction
        return await self._write(lambda db: append_batch(db, groups, self._run_states, self.max_run_bytes))

    async def read_events(self, run_id: str, after: int, limit: int) -> list[Event]:
        at_most = max(limit, 0)  # a negative LIMIT would mean "no limit"
        page = {"run_id": run_id, "after": after, "limit": at_most}

        def query(db: sqlite3.Connection) -> list[Event]:
            rows = db.execute(f"SELECT {EVENT_COLUMNS} FROM {PAGE}", page)
            return [Event(run_id, seq, type_, data, ts) for seq, type_, data, ts in rows]

        def glance(db: sqlite3.Connection) -> list[Event] | None:
            """The page, if it is small: a stream's first page, or what is left of
            a short history however large a page was asked for; else None. A
            replay's pages are sized in bytes, 64 KiB and more: read in the loop,
            2,000 followers of one history held its turns long (``/healthz`` p99 12
            -> 84 ms in ``bench/hostile.py``'s readers). The run's last seq comes
            first: most streams open before their run's first event, and with
            nothing past ``after`` the page's two statements are not run (3.7
            against 22 µs a stream, 20,000 runs' first pages in a loop). Seqs are
            unique: with no event past ``after + GLANCE_ROWS``, at most that many
            are left."""
            row = db.execute(LAST_OF_RUN, page).fetchone()
            if row is None or row[0] <= after or at_most == 0:
                return []
            if limit > GLANCE_ROWS and row[0] > after + GLANCE_ROWS:
                return None
            first = {**page, "limit": min(at_most, GLANCE_ROWS), "bytes": GLANCE_BYTES}
            small = db.execute(SMALL_PAGE, first).fetchone()[0]
            return query(db) if small else None

        events = await self._glance(glance)
        return events if events is not None else await self._query(query)
