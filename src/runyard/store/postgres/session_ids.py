"""The PostgreSQL store's ``SessionDirectory``: sessions under chosen ids, and listings."""

from __future__ import annotations

from typing import Any

from runyard.models import Session
from runyard.store._rows import SESSION_COLUMNS, session_from_row, session_row
from runyard.store.directory import ListedSession, SessionDirectory, SessionQuery
from runyard.store.postgres.connection import Connection, PostgresConnection
from runyard.store.postgres.schema import INSERT_SESSION, UNFINISHED

_BUSY = f"EXISTS (SELECT 1 FROM runs r WHERE r.session_id = s.session_id AND r.{UNFINISHED})"
# a metadata value as the filter compares it: a string as itself, anything else as its JSON text
_METADATA = (
    "CASE json_typeof(metadata -> ${k}::text) WHEN 'string' THEN metadata ->> ${k}::text"
    " ELSE (metadata -> ${k}::text)::text END = ${v}::text"
)


class PostgresSessionIds(PostgresConnection, SessionDirectory):
    """``SessionDirectory`` on PostgreSQL."""

    async def claim_session(self, session: Session, expired_before: float) -> Session | None:
        async def work(conn: Connection) -> Session | None:
            # the insert settles racing claims (the key's unique index); the loser reads the winner's
            inserted = await conn.fetchval(
                f"{INSERT_SESSION} ON CONFLICT (session_id) DO NOTHING RETURNING true", *session_row(session)
            )
            if inserted:
                return None
            row = await conn.fetchrow(
                f"SELECT {SESSION_COLUMNS}, {_BUSY} FROM sessions s WHERE session_id = $1 FOR UPDATE",
                session.session_id,
            )
            found = session_from_row(row)
            if not found.deleted and (row[-1] or found.last_activity >= expired_before):
                return found
            # deleted or expired: replaced, and what it remembered goes with it
            await conn.execute("DELETE FROM messages WHERE session_id = $1", session.session_id)
            await conn.execute("DELETE FROM sessions WHERE session_id = $1", session.session_id)
            await conn.execute(INSERT_SESSION, *session_row(session))
            return None

        return await self._transact(work)

    async def list_sessions(self, query: SessionQuery) -> list[ListedSession]:
        where: list[str] = ["owner = $1", "NOT deleted"]
        parameters: list[Any] = [query.owner]
        if query.before is not None:
            where.append(f"(last_activity, session_id) < (${len(parameters) + 1}, ${len(parameters) + 2})")
            parameters.extend(query.before)
        for key, value in query.metadata:
            where.append(_METADATA.format(k=len(parameters) + 1, v=len(parameters) + 2))
            parameters.extend([key, value])
        rows: list[Any] = await self._db().fetch(
            f"SELECT {SESSION_COLUMNS}, {_BUSY} FROM sessions s WHERE {' AND '.join(where)}"
            f" ORDER BY last_activity DESC, session_id DESC LIMIT ${len(parameters) + 1}",
            *parameters,
            max(query.limit, 0),
        )
        return [ListedSession(session_from_row(row), bool(row[-1])) for row in rows]
