"""The SQLite store's sessions and their memory."""

from __future__ import annotations

import sqlite3

from runyard.models import Message, Run, RunStatus, Session
from runyard.store._numbering import cancel_group, cancellations
from runyard.store._rows import (
    MESSAGE_COLUMNS,
    SESSION_COLUMNS,
    message_from_row,
    message_row,
    run_from_row,
    session_from_row,
    session_row,
)
from runyard.store.base import Cancelled, SessionStore
from runyard.store.sqlite.connection import RunStates, SQLiteConnection
from runyard.store.sqlite.events import append_batch
from runyard.store.sqlite.schema import INSERT_SESSION, RUN_COLUMNS, UNFINISHED_SQL


def cancel_unfinished(
    db: sqlite3.Connection, session_id: str, at: float, known: RunStates, sparing: str = ""
) -> list[Cancelled]:
    """Cancel the session's unfinished runs but ``sparing`` (in the writer
    thread); last in its work, as ``append_batch`` must be."""
    runs = [
        (run_id, RunStatus(status), pipeline, owner, attempt)
        for run_id, status, pipeline, owner, attempt in db.execute(
            "SELECT run_id, status, pipeline, owner, attempt FROM runs"
            f" WHERE session_id = ? AND {UNFINISHED_SQL} AND run_id != ?"
            " ORDER BY created_seq",
            (session_id, sparing),
        )
    ]
    if not runs:
        return []
    return cancellations(session_id, runs, append_batch(db, [cancel_group(run[0], at) for run in runs], known))


class SQLiteSessions(SQLiteConnection, SessionStore):
    """``SessionStore`` on SQLite."""

    async def create_session(self, session: Session) -> None:
        await self._execute(INSERT_SESSION, session_row(session))

    async def get_session(self, session_id: str) -> Session | None:
        rows = await self._read(f"SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = ?", (session_id,))
        return session_from_row(rows[0]) if rows else None

    async def touch_session(self, session_id: str, at: float) -> None:
        await self._execute(
            "UPDATE sessions SET last_activity = max(last_activity, ?) WHERE session_id = ?", (at, session_id)
        )

    async def delete_session(self, session_id: str, at: float) -> list[Cancelled]:
        def work(db: sqlite3.Connection) -> list[Cancelled]:
            db.execute("UPDATE sessions SET deleted = 1 WHERE session_id = ?", (session_id,))
            db.execute("DELETE FROM messages WHERE session_id = ?", (session_id,))
            return cancel_unfinished(db, session_id, at, self._run_states)

        return await self._write(work)

    async def unfinished_runs(self, session_id: str) -> list[Run]:
        rows = await self._read(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE session_id = ? AND {UNFINISHED_SQL} ORDER BY created_seq",
            (session_id,),
        )
        return [run_from_row(row) for row in rows]

    async def history(self, session_id: str) -> list[Message]:
        rows = await self._read(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = ? ORDER BY message_id",
            (session_id,),
        )
        return [message_from_row(row) for row in rows]

    async def append_message(self, session_id: str, message: Message, keep: int) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute(
                f"INSERT INTO messages (session_id, {MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                (session_id, *message_row(message)),
            )
            # everything at or below the (keep + 1)-th newest goes
            db.execute(
                "DELETE FROM messages WHERE session_id = ? AND message_id <= (SELECT message_id FROM messages"
                " WHERE session_id = ? ORDER BY message_id DESC LIMIT 1 OFFSET ?)",
                (session_id, session_id, max(keep, 0)),
            )

        await self._write(work)
