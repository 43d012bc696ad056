"""The PostgreSQL store's statements that write many rows at once, each row's
columns passed as arrays (``unnest``): a group of creations (``INSERT_GROUP``,
``creations.py``) and an append batch once its runs are locked (``WRITE_BATCH``,
``events.py``). One statement for a batch's every write is one round trip,
where a statement per table (or per row) was one each: in the fleet a round
trip costs ~0.1 ms of CPU between the client and the server
(``bench/README.md``, "A twelfth round").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from runyard.models import Run, Session
from runyard.store._rows import (
    RUN_COLUMNS,
    RUN_FIELDS,
    SESSION_COLUMNS,
    SESSION_FIELDS,
    UPDATE_FIELDS,
    run_row,
    session_row,
)

# The types of the runs' columns (``RUN_FIELDS``, then ``wake_at``) and the sessions'
# (``SESSION_FIELDS``), for the statements that take them as arrays
RUN_TYPES: dict[str, str] = {
    "run_id": "text",
    "session_id": "text",
    "owner": "text",
    "pipeline": "text",
    "status": "text",
    "input": "json",
    "output": "json",
    "error": "json",
    "metadata": "json",
    "created_at": "float8",
    "started_at": "float8",
    "finished_at": "float8",
    "last_seq": "int4",
    "attempt": "int4",
    "timeout_s": "float8",
    "max_attempts": "int4",
    "worker_id": "text",
    "lease_expires_at": "float8",
    "waiting": "json",
    "executed_s": "float8",
    "scheduled_for": "float8",
    "webhook": "text",
    "trace": "text",
    "wake_at": "float8",  # not a run field: the waiting column's ``until``
}
SESSION_TYPES: dict[str, str] = {
    "session_id": "text",
    "owner": "text",
    "created_at": "float8",
    "last_activity": "float8",
    "metadata": "json",
    "deleted": "bool",
}


def _insert_group() -> str:
    sessions = ", ".join(f"${i}::{SESSION_TYPES[name]}[]" for i, name in enumerate(SESSION_FIELDS, start=1))
    first = len(SESSION_FIELDS) + 1
    runs = ", ".join(f"${i}::{RUN_TYPES[name]}[]" for i, name in enumerate(RUN_FIELDS, start=first))
    # wake_at is the waiting column's ``until``
    return f"""WITH made AS (
    INSERT INTO sessions ({SESSION_COLUMNS}) SELECT * FROM unnest({sessions})
)
INSERT INTO runs ({RUN_COLUMNS}, wake_at)
SELECT {RUN_COLUMNS}, (waiting ->> 'until')::float8
FROM unnest({runs}) WITH ORDINALITY AS r({RUN_COLUMNS}, n) ORDER BY n"""


# Runs and their new sessions in one statement (``creation``'s arguments): a group of
# creations (``creations.py``; a transaction by itself when no quota is counted), or
# one run created under row locks (an idempotency key, ``enter_session``, a cron's
# firing). The runs are inserted in order, so their ``created_seq`` is their order.
INSERT_GROUP = _insert_group()


def creation(sessions: Sequence[Session], runs: Sequence[Run]) -> list[list[Any]]:
    """``INSERT_GROUP``'s parameters: the sessions' columns, then the runs'."""
    return [*_columns(map(session_row, sessions), len(SESSION_FIELDS)), *_columns(map(run_row, runs), len(RUN_FIELDS))]


def _columns(rows: Iterable[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows of ``width`` values as ``width`` lists, one per column (each empty if no row)."""
    columns: list[list[Any]] = [[] for _ in range(width)]
    for row in rows:
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


# The columns a RunUpdate sets (``_rows.UPDATE_FIELDS``) and their types. One statement
# updates every run of a batch: per column a "set" flag and a value; unset keeps.
UPDATABLE: dict[str, str] = {name: RUN_TYPES[name] for name in (*UPDATE_FIELDS, "wake_at")}


# An append batch's writes once its runs are locked, in one statement (one round
# trip instead of four: ``events.append_batch``). Its parameters, in order:
# - $1-$3: the batch's sessions (owner, id, how many events each gets), sorted;
#   their counters move on by that many, rows locked in key order (session_streams.py);
# - $4-$11: the events, each with the (1-based) index of its session in $1-$3 and its
#   place among that session's events of the batch: its session_seq is the counter's
#   value before the batch plus that place;
# - $12-$14: the runs that got events and no RunUpdate (the common case): last seq, bytes;
# - $15 on: the runs with a RunUpdate (``UPDATABLE``).
# The two sets of runs never overlap: a row is updated once. It answers how many
# events it inserted, which the caller checks against what it sent.
def _write_batch() -> str:
    arrays = ["$15::text[]", "$16::int4[]", "$17::int8[]"]
    names = ["run_id", "last_seq", "stored_bytes"]
    assignments = ["last_seq = u.last_seq", "stored_bytes = u.stored_bytes"]
    for column, type_ in UPDATABLE.items():
        assignments.append(f"{column} = CASE WHEN u.set_{column} THEN u.{column} ELSE r.{column} END")
        arrays += [f"${len(arrays) + 15}::bool[]", f"${len(arrays) + 16}::{type_}[]"]
        names += [f"set_{column}", column]
    return f"""WITH taken AS (
    INSERT INTO session_streams (owner, session_id, last_seq)
    SELECT * FROM unnest($1::text[], $2::text[], $3::int8[]) ORDER BY 1, 2
    ON CONFLICT (owner, session_id) DO UPDATE SET last_seq = session_streams.last_seq + EXCLUDED.last_seq
    RETURNING owner, session_id, last_seq
), counters AS (
    SELECT s.i, t.last_seq - s.n AS last_seq
    FROM unnest($1::text[], $2::text[], $3::int8[]) WITH ORDINALITY AS s(owner, session_id, n, i)
    JOIN taken t ON t.owner = s.owner AND t.session_id = s.session_id
), inserted AS (
    INSERT INTO events (run_id, seq, type, data, ts, pos, session_seq)
    SELECT e.run_id, e.seq, e.type, e.data, e.ts, e.pos, c.last_seq + e.place
    FROM unnest($4::text[], $5::int4[], $6::text[], $7::bytea[], $8::float8[], $9::int4[], $10::int8[], $11::int8[])
        AS e(run_id, seq, type, data, ts, pos, session, place)
    JOIN counters c ON c.i = e.session
    RETURNING 1
), counted AS (
    UPDATE runs AS r SET last_seq = u.last_seq, stored_bytes = u.stored_bytes
    FROM unnest($12::text[], $13::int4[], $14::int8[]) AS u(run_id, last_seq, stored_bytes)
    WHERE r.run_id = u.run_id
), updated AS (
    UPDATE runs AS r SET {", ".join(assignments)}
    FROM unnest({", ".join(arrays)}) AS u({", ".join(names)}) WHERE r.run_id = u.run_id
)
SELECT count(*) FROM inserted"""


WRITE_BATCH = _write_batch()
