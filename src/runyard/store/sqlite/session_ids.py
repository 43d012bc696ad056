"""The SQLite store's ``SessionDirectory``: sessions under chosen ids, and listings."""

from __future__ import annotations

import sqlite3
from typing import Any

from runyard.models import Session
from runyard.store._rows import SESSION_COLUMNS, session_from_row, session_row
from runyard.store.directory import ListedSession, SessionDirectory, SessionQuery
from runyard.store.sqlite.connection import SQLiteConnection
from runyard.store.sqlite.schema import INSERT_SESSION, UNFINISHED_SQL

_BUSY = f"EXISTS (SELECT 1 FROM runs r WHERE r.session_id = s.session_id AND r.{UNFINISHED_SQL})"
# a metadata value as the filter compares it: a string as itself, anything else as its JSON text
_METADATA = "CASE json_type(metadata, ?) WHEN 'text' THEN json_extract(metadata, ?) ELSE metadata -> ? END = ?"


def json_path(key: str) -> str:
    """The JSON path of a top-level key (keys are of ``[A-Za-z0-9_.:-]``: no quote to escape)."""
    return f'$."{key}"'


class SQLiteSessionIds(SQLiteConnection, SessionDirectory):
    """``SessionDirectory`` on SQLite: one writer, so a claim's check and insert are one step."""

    async def claim_session(self, session: Session, expired_before: float) -> Session | None:
        def work(db: sqlite3.Connection) -> Session | None:
            row = db.execute(
                f"SELECT {SESSION_COLUMNS}, {_BUSY} FROM sessions s WHERE session_id = ?", (session.session_id,)
            ).fetchone()
            if row is not None:
                found = session_from_row(row)
                if not found.deleted and (row[-1] or found.last_activity >= expired_before):
                    return found
                # deleted or expired: replaced, and what it remembered goes with it
                db.execute("DELETE FROM messages WHERE session_id = ?", (session.session_id,))
                db.execute("DELETE FROM sessions WHERE session_id = ?", (session.session_id,))
            db.execute(INSERT_SESSION, session_row(session))
            return None

        return await self._write(work)

    async def list_sessions(self, query: SessionQuery) -> list[ListedSession]:
        where: list[str] = ["owner = ?", "NOT deleted"]
        parameters: list[Any] = [query.owner]
        if query.before is not None:
            where.append("(last_activity, session_id) < (?, ?)")
            parameters.extend(query.before)
        for key, value in query.metadata:
            where.append(_METADATA)
            parameters.extend([json_path(key)] * 3 + [value])
        rows: list[Any] = await self._read(
            f"SELECT {SESSION_COLUMNS}, {_BUSY} FROM sessions s WHERE {' AND '.join(where)}"
            " ORDER BY last_activity DESC, session_id DESC LIMIT ?",
            (*parameters, max(query.limit, 0)),
        )
        return [ListedSession(session_from_row(row), bool(row[-1])) for row in rows]
