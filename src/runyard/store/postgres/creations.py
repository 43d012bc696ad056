"""Group commit of run creations on PostgreSQL: the runs (and new sessions) that
``create_run`` calls of one process hand over while a group is being written
are written together next, in one statement (``batches.INSERT_GROUP``, a
transaction by itself: one round trip), as the SQLite store's writer thread
groups its writes.

A creation waits for one statement, not for one per run ahead of it, and
PostgreSQL flushes its WAL once per group instead of once per run. Grouped
are the creations of a run in a session of its own (or none), with or without
an owner's quota. A group with quotas is a transaction of its own: it takes its
owners' quota rows in one order (by owner), so two groups never wait on each
other, and admits each creation in its turn while its owner has runs left,
exactly as one transaction each would, before the same statement writes those
admitted. Those that decide more under row locks (an idempotency key,
``enter_session``) keep a transaction each: a group must not hold the locks
of the requests that would have to wait for it.

Each creation still ends on its own: a group that PostgreSQL refuses for a
reason of one of its rows (a duplicate run id, say) is written again one
creation per statement, so each caller gets its own answer; "busy or down"
(``StoreUnavailable``) is every member's answer, as it would have been for each
alone. A group is written whole or not at all: never a half-created run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from runyard.errors import QuotaExceeded, StoreError, StoreUnavailable
from runyard.models import Run, Session
from runyard.store.postgres.batches import INSERT_GROUP, creation
from runyard.store.postgres.connection import Connection

# At most this many creations per transaction: bounds a group's statement and its WAL record.
MAX_GROUP = 500

Refusals = list[QuotaExceeded | None]
Transact = Callable[[Callable[[Connection], Awaitable[Refusals]]], Awaitable[Refusals]]
Execute = Callable[..., Awaitable[None]]  # one statement (its SQL, then its parameters), a transaction by itself


@dataclass(slots=True)
class _Member:
    run: Run
    session: Session | None
    quota: int | None  # the owner's, when one is set
    done: asyncio.Future[None]


async def _insert(conn: Connection, members: list[_Member]) -> list[QuotaExceeded | None]:
    """Write the members the quotas admit; per member, None or why it was refused."""
    refused = await _count(conn, members)
    admitted = [m for m, no in zip(members, refused, strict=True) if no is None]
    if admitted:
        await conn.execute(INSERT_GROUP, *_arrays(admitted))
    return refused


def _arrays(members: list[_Member]) -> list[list[Any]]:
    return creation([m.session for m in members if m.session is not None], [m.run for m in members])


async def _count(conn: Connection, members: list[_Member]) -> list[QuotaExceeded | None]:
    """Count the members with a quota against their owners' rows, taken in owner order."""
    owners = sorted({m.run.owner for m in members if m.quota is not None})
    if not owners:
        return [None] * len(members)
    await conn.execute(
        "INSERT INTO owner_quota (owner, runs_created) SELECT unnest($1::text[]), 0 ON CONFLICT DO NOTHING", owners
    )
    rows = await conn.fetch(
        "SELECT owner, runs_created FROM owner_quota WHERE owner = ANY($1::text[]) ORDER BY owner FOR UPDATE", owners
    )
    created: dict[str, int] = {row[0]: row[1] for row in rows}
    refused: list[QuotaExceeded | None] = []
    for m in members:
        owner = m.run.owner
        if m.quota is not None and created[owner] >= m.quota:
            refused.append(QuotaExceeded(f"owner {owner!r} has created all {m.quota} runs of its quota"))
            continue
        if m.quota is not None:
            created[owner] += 1
        refused.append(None)
    await conn.execute(
        "UPDATE owner_quota q SET runs_created = u.n FROM unnest($1::text[], $2::int8[]) AS u(owner, n)"
        " WHERE q.owner = u.owner",
        owners,
        [created[owner] for owner in owners],
    )
    return refused


class GroupCommit:
    """Writes the creations handed to ``create`` in groups, one group at a time."""

    def __init__(self, transact: Transact, execute: Execute) -> None:
        self._transact = transact
        self._execute = execute
        self._pending: list[_Member] = []
        self._writer: asyncio.Task[None] | None = None

    async def create(self, run: Run, session: Session | None, quota: int | None = None) -> None:
        """Write ``run`` (and ``session``) with the next group; returns once committed.
        ``QuotaExceeded`` (nothing written) when its owner has created ``quota`` runs.
        A cancelled caller only stops waiting: the group is written whole."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieved)  # a caller that stopped waiting leaves no unread error
        self._pending.append(_Member(run, session, quota, done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_all(), name="runyard-pg-creations")
        await asyncio.shield(done)

    async def _write_all(self) -> None:
        group: list[_Member] = []
        try:
            while self._pending:
                group, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
                await self._write(group)
        except BaseException as exc:  # the loop is shutting down: no caller waits forever
            _settle(group + self._pending, StoreError(f"run creations stopped: {exc!r}"))
            self._pending = []
            raise
        finally:
            self._writer = None

    async def _write(self, group: list[_Member]) -> None:
        try:
            if any(member.quota is not None for member in group):
                refused = await self._transact(lambda conn: _insert(conn, group))
            else:  # nothing to count first: the one statement alone
                await self._execute(INSERT_GROUP, *_arrays(group))
                refused = [None] * len(group)
        except StoreUnavailable as exc:
            _settle(group, exc)
        except Exception as exc:
            if len(group) == 1:
                _settle(group, exc)
            else:  # nothing was written: each creation alone, for its own answer
                await asyncio.gather(*(self._write([member]) for member in group))
        else:
            for member, why in zip(group, refused, strict=True):
                _settle([member], why)


def _settle(group: list[_Member], error: BaseException | None) -> None:
    for member in group:
        if member.done.done():
            continue
        if error is None:
            member.done.set_result(None)
        else:
            member.done.set_exception(error)


def _retrieved(done: asyncio.Future[None]) -> None:
    if not done.cancelled():
        done.exception()
