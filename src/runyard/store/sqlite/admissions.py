"""The SQLite store's admissions: runs created under quotas, idempotency keys and
session entry, decided in the writer thread (the only writer: checks and writes cannot race)."""

from __future__ import annotations

import sqlite3

from runyard.errors import QuotaExceeded
from runyard.models import Multitask, Run, Session
from runyard.store._rows import SESSION_COLUMNS, run_from_row, run_row, session_from_row, session_row
from runyard.store.base import Admission, Admissions, Entered, SessionEntry
from runyard.store.sqlite.connection import RunStates, SQLiteConnection
from runyard.store.sqlite.schema import INSERT_RUN, INSERT_SESSION, RUN_COLUMNS, UNFINISHED_SQL
from runyard.store.sqlite.sessions import cancel_unfinished


def _idempotent_run(db: sqlite3.Connection, owner: str, key: str, since: float) -> tuple[str, Run] | None:
    seen = db.execute(
        "SELECT fingerprint, run_id FROM idempotency_keys WHERE owner = ? AND key = ? AND created_at >= ?",
        (owner, key, since),
    ).fetchone()
    if seen is None:
        return None
    run = db.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (seen[1],)).fetchone()
    return None if run is None else (seen[0], run_from_row(run))  # a swept run's key is as good as gone


def _admit(db: sqlite3.Connection, run: Run, admission: Admission) -> Run | None:
    """In the writer thread, so checks and counts cannot race: the first run of a
    repeated key, or None once ``run`` is admitted (and counted)."""
    key = admission.idempotency_key
    if key is not None:
        seen = _idempotent_run(db, run.owner, key, admission.since)
        if seen is not None:
            return admission.repeat_of(*seen)
    if admission.quota is not None:
        counted = db.execute(
            "INSERT INTO owner_quota (owner, runs_created) VALUES (?, 1) ON CONFLICT (owner)"
            " DO UPDATE SET runs_created = runs_created + 1 WHERE runs_created < ? RETURNING runs_created",
            (run.owner, admission.quota),
        ).fetchone()
        if counted is None or admission.quota < 1:
            raise QuotaExceeded(f"owner {run.owner!r} has created all {admission.quota} runs of its quota")
    if key is not None:
        db.execute(
            "INSERT OR REPLACE INTO idempotency_keys (owner, key, fingerprint, run_id, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (run.owner, key, admission.fingerprint, run.run_id, run.created_at),
        )
    return None


def enter(
    db: sqlite3.Connection, run: Run, entry: SessionEntry, admission: Admission | None, known: RunStates
) -> Entered:
    """``enter_session`` in the writer thread: the only writer, so the session
    cannot change between its checks and the run's insertion."""
    if admission is not None:
        first = _admit(db, run, admission)  # rolled back with the savepoint if a check below fails
        if first is not None:
            return Entered(first)
    found = db.execute(f"SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = ?", (run.session_id,)).fetchone()
    busy = db.execute(
        f"SELECT run_id FROM runs WHERE session_id = ? AND {UNFINISHED_SQL} ORDER BY created_seq LIMIT 1",
        (run.session_id,),
    ).fetchone()
    entry.check(None if found is None else session_from_row(found), run, busy[0] if busy else None)
    db.execute(INSERT_RUN, run_row(run, last_seq=False))
    db.execute(
        "UPDATE sessions SET last_activity = max(last_activity, ?) WHERE session_id = ?",
        (run.created_at, run.session_id),
    )
    if busy is None or entry.multitask is not Multitask.INTERRUPT:
        return Entered(run)
    # after the insertion, because append_batch must come last: the new run is spared
    return Entered(run, cancel_unfinished(db, run.session_id, run.created_at, known, sparing=run.run_id))


class SQLiteAdmissions(SQLiteConnection, Admissions):
    """``Admissions`` on SQLite."""

    async def create_run(self, run: Run, new_session: Session | None = None, admission: Admission | None = None) -> Run:
        row = run_row(run, last_seq=False)
        session = None if new_session is None else session_row(new_session)

        def work(db: sqlite3.Connection) -> Run:
            if admission is not None:
                first = _admit(db, run, admission)
                if first is not None:
                    return first
            if session is not None:
                db.execute(INSERT_SESSION, session)
            db.execute(INSERT_RUN, row)
            return run

        return await self._write(work)

    async def enter_session(self, run: Run, entry: SessionEntry, admission: Admission | None = None) -> Entered:
        return await self._write(lambda db: enter(db, run, entry, admission, self._run_states))

    async def idempotent_run(self, owner: str, key: str, since: float) -> tuple[str, Run] | None:
        return await self._query(lambda db: _idempotent_run(db, owner, key, since))
