"""The PostgreSQL store's sessions and their memory."""

from __future__ import annotations

from typing import Any

from runyard.models import Message, Run, Session
from runyard.store._numbering import cancel_group, cancellations
from runyard.store._rows import (
    MESSAGE_COLUMNS,
    RUN_COLUMNS,
    SESSION_COLUMNS,
    STATUSES,
    message_from_row,
    message_row,
    session_from_row,
    session_row,
)
from runyard.store.base import Cancelled, SessionStore
from runyard.store.postgres.connection import Connection, PostgresConnection
from runyard.store.postgres.events import append_batch
from runyard.store.postgres.schema import INSERT_SESSION, UNFINISHED
from runyard.store.postgres.touches import TOUCH, SessionTouches


async def cancel_unfinished(conn: Connection, session_id: str, at: float, sparing: str = "") -> list[Cancelled]:
    """Cancel the session's unfinished runs but ``sparing``, inside the
    caller's transaction (which holds the session's row)."""
    # locked first (in run id order, as append locks), then read by a statement of
    # its own: its snapshot sees them as locked, so "was it running" cannot change
    # under us (a claim taking a queued run meanwhile, say)
    locked = await conn.fetch(
        f"SELECT run_id FROM runs WHERE session_id = $1 AND {UNFINISHED} AND run_id <> $2 ORDER BY run_id FOR UPDATE",
        session_id,
        sparing,
    )
    if not locked:
        return []
    rows = await conn.fetch(
        f"SELECT run_id, status, pipeline, owner, attempt FROM runs WHERE run_id = ANY($1::text[]) AND {UNFINISHED}"
        " ORDER BY created_seq",
        [row[0] for row in locked],
    )
    runs = [(row[0], STATUSES[row[1]], row[2], row[3], row[4]) for row in rows]
    return cancellations(session_id, runs, await append_batch(conn, [cancel_group(run[0], at) for run in runs]))


class PostgresSessions(PostgresConnection, SessionStore):
    """``SessionStore`` on PostgreSQL."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._touches = SessionTouches(lambda ids, ats: self._execute(TOUCH, ids, ats))

    async def create_session(self, session: Session) -> None:
        await self._execute(INSERT_SESSION, *session_row(session))

    async def get_session(self, session_id: str) -> Session | None:
        row = await self._db().fetchrow(f"SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = $1", session_id)
        return None if row is None else session_from_row(row)

    async def touch_session(self, session_id: str, at: float) -> None:
        await self._touches.touch(session_id, at)

    async def delete_session(self, session_id: str, at: float) -> list[Cancelled]:
        async def work(conn: Connection) -> list[Cancelled]:
            # the UPDATE takes the session's row lock first, as _enter does
            await conn.execute("UPDATE sessions SET deleted = true WHERE session_id = $1", session_id)
            await conn.execute("DELETE FROM messages WHERE session_id = $1", session_id)
            return await cancel_unfinished(conn, session_id, at)

        return await self._transact(work)

    async def unfinished_runs(self, session_id: str) -> list[Run]:
        return await self._runs(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE session_id = $1 AND {UNFINISHED} ORDER BY created_seq", session_id
        )

    async def history(self, session_id: str) -> list[Message]:
        rows = await self._db().fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 ORDER BY message_id", session_id
        )
        return [message_from_row(row) for row in rows]

    async def append_message(self, session_id: str, message: Message, keep: int) -> None:
        async def work(conn: Connection) -> None:
            await conn.execute(
                f"INSERT INTO messages (session_id, {MESSAGE_COLUMNS}) VALUES ($1, $2, $3, $4, $5)",
                session_id,
                *message_row(message),
            )
            # everything at or below the (keep + 1)-th newest goes
            await conn.execute(
                "DELETE FROM messages WHERE session_id = $1 AND message_id <= (SELECT message_id FROM messages"
                " WHERE session_id = $1 ORDER BY message_id DESC LIMIT 1 OFFSET $2)",
                session_id,
                max(keep, 0),
            )

        await self._transact(work)
