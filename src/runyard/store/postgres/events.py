"""The PostgreSQL store's event logs.

Many processes may append to one run at once: ``append`` locks the batch's runs
rows (``SELECT ... FOR UPDATE``, sorted by run id, so overlapping batches never
deadlock) and numbers events from the ``last_seq`` kept in each row, so the
row lock is the gap-free counter. A batch is one transaction of four round
trips however many runs and events it holds: BEGIN, lock, write, COMMIT. The
write is one statement (``batches.WRITE_BATCH``): it numbers the events in their
sessions' streams (``session_streams.py``), inserts them and sets every run's
last seq and updates; one round trip more when the batch records steps, and one
when it finishes runs with a webhook (their outbox rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from runyard.errors import StoreError
from runyard.models import Event, now, session_channel
from runyard.store._numbering import RunState, finished_webhooks, number, recorded_steps
from runyard.store._rows import EVENT_COLUMNS, STATUSES, load_wait, step_row, update_columns
from runyard.store.base import AppendGroup, AppendResult, EventStore
from runyard.store.postgres.batches import UPDATABLE, WRITE_BATCH
from runyard.store.postgres.connection import Connection, PostgresConnection
from runyard.store.postgres.outbox import QUEUE_DELIVERIES
from runyard.store.postgres.reads import GroupRead
from runyard.store.postgres.schema import INSERT_STEPS, LOCK_RUNS
from runyard.store.postgres.session_streams import session_places

Page = tuple[str, int, int]  # a read of a run's events: run id, after, limit
# Pages of different streams read at once are one statement (``reads.py``), of at
# most 32: a catch-up page weighs up to 1 MiB (``events.stream``), and the group's
# every reader waits for the whole answer.
PAGES_PER_READ = 32
READ_PAGES = f"""SELECT p.n, e.seq, e.type, e.data, e.ts
FROM unnest($1::text[], $2::int8[], $3::int8[]) WITH ORDINALITY AS p(run_id, after, most, n)
CROSS JOIN LATERAL (
    SELECT {EVENT_COLUMNS} FROM events WHERE events.run_id = p.run_id AND seq > p.after ORDER BY seq LIMIT p.most
) e
ORDER BY p.n, e.seq"""


async def append_batch(
    conn: Connection, groups: Sequence[AppendGroup], max_run_bytes: int | None = None
) -> list[AppendResult]:
    """Number, insert and apply ``groups`` inside the caller's transaction."""
    rows = await conn.fetch(LOCK_RUNS, sorted({group.run_id for group in groups}))
    runs = {
        run_id: RunState(
            STATUSES[status],
            last_seq,
            None,
            worker,
            attempt,
            lease,
            stored,
            load_wait(waiting),
            hook,
            session=session_channel(owner, session_id),
        )
        for run_id, status, last_seq, worker, attempt, lease, stored, waiting, hook, owner, session_id in rows
    }
    sessions = {run_id: (owner, session_id) for run_id, *_, owner, session_id in rows}
    return await append_locked(conn, groups, runs, sessions, max_run_bytes)


async def append_locked(
    conn: Connection,
    groups: Sequence[AppendGroup],
    runs: dict[str, RunState],
    sessions: dict[str, tuple[str, str]],
    max_run_bytes: int | None = None,
) -> list[AppendResult]:
    """``append_batch`` for runs whose rows the caller's transaction has locked
    already, with their states (``runs``) and each one's (owner, session id):
    a claim, which locked them choosing them."""
    results, events = number(groups, runs, max_run_bytes)
    steps = recorded_steps(groups, results)
    if steps:
        rows = [(run_id, *step_row(step)) for run_id, step in steps]
        await conn.execute(INSERT_STEPS, *(list(column) for column in zip(*rows, strict=True)))
    owed = finished_webhooks(runs)
    if owed:
        await conn.execute(
            QUEUE_DELIVERIES, [run_id for run_id, _ in owed], [url for _, url in owed], [now()] * len(owed)
        )
    if events or any(run.updates for run in runs.values()):
        inserted = await conn.fetchval(WRITE_BATCH, *_written(groups, results, events, runs, sessions))
        if inserted != len(events):  # a bug, never a client's doing: the transaction is rolled back
            raise StoreError(f"a batch of {len(events)} events inserted {inserted}")
    return results


def _written(
    groups: Sequence[AppendGroup],
    results: Sequence[AppendResult],
    events: list[Event],
    runs: dict[str, RunState],
    sessions: dict[str, tuple[str, str]],
) -> list[list[Any]]:
    """``WRITE_BATCH``'s parameters, in its order."""
    places = session_places(events, sessions)
    # a run with updated columns gets its last seq with them, the others by themselves
    counted = [(run_id, run) for run_id, run in runs.items() if run.appended and not run.updates]
    updated = [(run_id, update_columns(run.updates)) for run_id, run in runs.items() if run.updates]
    arguments: list[list[Any]] = [
        places.owners,
        places.session_ids,
        places.counts,
        [e.run_id for e in events],
        [e.seq for e in events],
        [e.type for e in events],
        [e.data for e in events],
        [e.ts for e in events],
        _positions(groups, results),
        places.sessions,
        places.places,
        [run_id for run_id, _ in counted],
        [run.last_seq for _, run in counted],
        [run.stored_bytes for _, run in counted],
        [run_id for run_id, _ in updated],
        [runs[run_id].last_seq for run_id, _ in updated],
        [runs[run_id].stored_bytes for run_id, _ in updated],
    ]
    for column in UPDATABLE:
        arguments.append([column in columns for _, columns in updated])
        arguments.append([columns.get(column) for _, columns in updated])
    return arguments


def _positions(groups: Sequence[AppendGroup], results: Sequence[AppendResult]) -> list[int | None]:
    """The ``pos`` of each event numbered, in order: its draft's (numbering made
    one event per draft of each written group)."""
    return [
        draft.pos
        for group, result in zip(groups, results, strict=True)
        if isinstance(result, list)
        for draft in group.drafts
    ]


class PostgresEvents(PostgresConnection, EventStore):
    """``EventStore`` on PostgreSQL."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pages: GroupRead[Page, list[Event]] = GroupRead(self._read_pages, most=PAGES_PER_READ)

    async def append(self, groups: Sequence[AppendGroup]) -> list[AppendResult]:
        if not groups:
            return []
        return await self._transact_once(
            lambda conn: append_batch(conn, groups, self.max_run_bytes),
            lambda results: next((result[0] for result in results if isinstance(result, list) and result), None),
        )

    async def read_events(self, run_id: str, after: int, limit: int) -> list[Event]:
        return await self._pages.read((run_id, after, max(limit, 0))) or []

    async def _read_pages(self, pages: list[Page]) -> dict[Page, list[Event]]:
        run_ids, afters, limits = zip(*pages, strict=True)
        rows = await self._db().fetch(READ_PAGES, run_ids, afters, limits)
        read: dict[Page, list[Event]] = {}
        for n, seq, type_, data, ts in rows:
            page = pages[n - 1]
            read.setdefault(page, []).append(Event(page[0], seq, type_, data, ts))
        return read
