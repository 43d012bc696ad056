"""Group commit of run creations on PostgreSQL: the runs (and new sessions) that
``create_run`` calls of one process hand over while a group is being written
are written together next, in one transaction of two pipelined statements,
as the SQLite store's writer thread groups its writes.

A creation waits for one transaction, not for one per run ahead of it, and
PostgreSQL flushes its WAL once per group instead of once per run. Only
creations with nothing to decide are grouped: a new run in a session of its
own or already created, without quota or idempotency key. Those that decide
under row locks (``Admission``, ``enter_session``) keep a transaction each,
so that no group holds another request's locks (and no two groups of two
processes wait on each other's).

Each creation still ends on its own: a group that PostgreSQL refuses for a
reason of one of its rows (a duplicate run id, say) is written again one
creation per transaction, so each caller gets its own answer; "busy or down"
(``StoreUnavailable``) is every member's answer, as it would have been for each
alone. A group commits whole or not at all: never a half-created run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from runyard.errors import StoreError, StoreUnavailable
from runyard.models import Run, Session
from runyard.store._rows import run_row, session_row
from runyard.store.postgres.connection import Connection
from runyard.store.postgres.schema import INSERT_RUN, INSERT_SESSION

# At most this many creations per transaction: bounds a group's statement and its WAL record.
MAX_GROUP = 500

Transact = Callable[[Callable[[Connection], Awaitable[None]]], Awaitable[None]]
_Member = tuple[Run, Session | None, "asyncio.Future[None]"]


async def _insert(conn: Connection, members: list[_Member]) -> None:
    sessions = [session_row(session) for _, session, _ in members if session is not None]
    if sessions:
        await conn.executemany(INSERT_SESSION, sessions)
    await conn.executemany(INSERT_RUN, [run_row(run) for run, _, _ in members])


class GroupCommit:
    """Writes the creations handed to ``create`` in groups, one group at a time."""

    def __init__(self, transact: Transact) -> None:
        self._transact = transact
        self._pending: list[_Member] = []
        self._writer: asyncio.Task[None] | None = None

    async def create(self, run: Run, session: Session | None) -> None:
        """Write ``run`` (and ``session``) with the next group; returns once committed.
        A cancelled caller only stops waiting: the group is written whole."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieved)  # a caller that stopped waiting leaves no unread error
        self._pending.append((run, session, done))
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
            await self._transact(lambda conn: _insert(conn, group))
        except StoreUnavailable as exc:
            _settle(group, exc)
        except Exception as exc:
            if len(group) == 1:
                _settle(group, exc)
            else:  # nothing was written: each creation alone, for its own answer
                await asyncio.gather(*(self._write([member]) for member in group))
        else:
            _settle(group, None)


def _settle(group: list[_Member], error: BaseException | None) -> None:
    for _, _, done in group:
        if done.done():
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)


def _retrieved(done: asyncio.Future[None]) -> None:
    if not done.cancelled():
        done.exception()
