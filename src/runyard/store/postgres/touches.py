"""Sessions' last activity on PostgreSQL, written in groups.

A worker touches a run's session when the run ends (``Endings.finish``); the
event writer ends the runs of a batch together, so their touches come at once.
One statement per touch was a transaction (and a WAL flush) per run ending;
here the touches handed over while one group is written are written next, in
one statement, and each caller returns once its group has committed (or gets
its error), as with one statement each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

# the group's rows locked first, in session id order (as renew_leases locks runs):
# two processes' groups never deadlock on each other
TOUCH = """
UPDATE sessions s SET last_activity = u.at
FROM unnest($1::text[], $2::float8[]) AS u(session_id, at)
WHERE s.session_id = u.session_id AND s.last_activity < u.at AND s.session_id IN (
    SELECT session_id FROM sessions WHERE session_id = ANY($1::text[]) ORDER BY session_id FOR UPDATE
)
"""

Execute = Callable[[list[str], list[float]], Awaitable[None]]


class SessionTouches:
    """Writes the touches handed to ``touch`` in groups, one group at a time."""

    def __init__(self, execute: Execute) -> None:
        self._execute = execute
        self._pending: dict[str, float] = {}  # session id -> its latest activity to write
        self._waiting: list[asyncio.Future[None]] = []
        self._writer: asyncio.Task[None] | None = None

    async def touch(self, session_id: str, at: float) -> None:
        """Write ``at`` as the session's last activity (unless it has a later one) with
        the next group; returns once committed. A cancelled caller only stops waiting."""
        if at > self._pending.get(session_id, at - 1.0):
            self._pending[session_id] = at
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieved)  # a caller that stopped waiting leaves no unread error
        self._waiting.append(done)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_all(), name="runyard-pg-touches")
        await asyncio.shield(done)

    async def _write_all(self) -> None:
        waiting: list[asyncio.Future[None]] = []
        try:
            while self._pending:
                group, waiting = self._pending, self._waiting
                self._pending, self._waiting = {}, []
                error: BaseException | None = None
                try:
                    await self._execute(list(group), list(group.values()))
                except Exception as exc:
                    error = exc
                _settle(waiting, error)
        except BaseException as exc:  # the loop is shutting down: no caller waits forever
            _settle(waiting + self._waiting, exc)
            self._pending, self._waiting = {}, []
            raise
        finally:
            self._writer = None


def _settle(waiting: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for done in waiting:
        if done.done():
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)


def _retrieved(done: asyncio.Future[None]) -> None:
    if not done.cancelled():
        done.exception()
