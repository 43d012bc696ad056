"""The row codec every store shares: which fields a run, a session and a message
have in a row, how a model becomes a row and a row a model, and which fields a
``RunUpdate`` sets to what.

A row is a sequence in ``RUN_FIELDS`` (``SESSION_FIELDS``, ``MESSAGE_COLUMNS``)
order: a ``sqlite3`` tuple and an ``asyncpg.Record`` both index by position, so
one decoder serves both SQL stores. JSON values (input, output, error, metadata,
message content and extra) travel as orjson text in both (PostgreSQL keeps them
as ``json``, the exact text written); a status as its value. Events need no
codec: their columns (``EVENT_COLUMNS``) hold the model's own bytes and floats.

``update_fields`` is the one statement of what a ``RunUpdate`` changes: the
memory store sets those fields on its ``Run``, the numbering on its ``RunState``,
and the SQL stores turn ``update_columns`` into their ``UPDATE``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

from runyard.models import Cron, Message, Run, RunError, RunStatus, RunUpdate, Session, StepRecord, Wait
from runyard.store.items import Item, joined, pack_vector, split, unpack_vector

RUN_FIELDS: tuple[str, ...] = (
    "run_id",
    "session_id",
    "owner",
    "pipeline",
    "status",
    "input",
    "output",
    "error",
    "metadata",
    "created_at",
    "started_at",
    "finished_at",
    "last_seq",
    "attempt",
    "timeout_s",
    "max_attempts",
    "worker_id",
    "lease_expires_at",
    "waiting",
    "executed_s",
    "scheduled_for",
    "webhook",
    "trace",
)
RUN_COLUMNS = ", ".join(RUN_FIELDS)
SESSION_FIELDS: tuple[str, ...] = ("session_id", "owner", "created_at", "last_activity", "metadata", "deleted")
SESSION_COLUMNS = ", ".join(SESSION_FIELDS)
MESSAGE_COLUMNS = "role, content, ts, extra"
EVENT_COLUMNS = "seq, type, data, ts"
STEP_COLUMNS = "name, n, result, pos, at"
# The fields a RunUpdate may set, in ``update_fields`` order.
UPDATE_FIELDS: tuple[str, ...] = (
    "status",
    "output",
    "error",
    "started_at",
    "finished_at",
    "attempt",
    "worker_id",
    "lease_expires_at",
    "waiting",
    "executed_s",
)

STATUSES = {status.value: status for status in RunStatus}  # a dict lookup, not an Enum call per row


def dump(value: Any) -> str | None:
    """A JSON column's text (None stays NULL)."""
    return None if value is None else orjson.dumps(value).decode()


def load(text: str | None) -> Any:
    """A JSON column's value (NULL is None)."""
    return None if text is None else orjson.loads(text)


def json_list(values: Iterable[str]) -> str:
    """Strings as one JSON list parameter."""
    return orjson.dumps(list(values)).decode()


def _dump_error(error: RunError | None) -> str | None:
    return None if error is None else dump(error.to_dict())


def _status_value(status: RunStatus) -> str:
    return status.value


def dump_wait(wait: Wait | None) -> str | None:
    """A ``waiting`` column's text (None stays NULL)."""
    return None if wait is None else dump(wait.to_dict())


def load_wait(text: str | None) -> Wait | None:
    """A ``waiting`` column's value (NULL is None)."""
    return None if text is None else Wait.from_dict(orjson.loads(text))


def wake_at(wait: Wait | None) -> float | None:
    """The ``wake_at`` column SQL stores keep beside ``waiting``, indexed: when a
    waiting run's sleep ends or its question times out (``due_waits``)."""
    return None if wait is None else wait.until


# How a run field becomes its column's value; the others are stored as they are.
ENCODERS: dict[str, Callable[[Any], Any]] = {
    "status": _status_value,
    "input": dump,
    "output": dump,
    "error": _dump_error,
    "metadata": dump,
    "waiting": dump_wait,
}


def run_row(run: Run, *, last_seq: bool = True) -> tuple[Any, ...]:
    """``run`` as the values of ``RUN_FIELDS`` (an INSERT's parameters); without
    ``last_seq`` for a store that reads it from the events instead (SQLite)."""
    head = (
        run.run_id,
        run.session_id,
        run.owner,
        run.pipeline,
        run.status.value,
        dump(run.input),
        dump(run.output),
        _dump_error(run.error),
        dump(run.metadata),
        run.created_at,
        run.started_at,
        run.finished_at,
    )
    tail = (
        run.attempt,
        run.timeout_s,
        run.max_attempts,
        run.worker_id,
        run.lease_expires_at,
        dump_wait(run.waiting),
        run.executed_s,
        run.scheduled_for,
        run.webhook,
        run.trace,
    )
    return (*head, run.last_seq, *tail) if last_seq else head + tail


def run_from_row(row: Sequence[Any]) -> Run:
    """A run from a row whose first columns are ``RUN_FIELDS``."""
    error = load(row[7])
    return Run(
        run_id=row[0],
        session_id=row[1],
        owner=row[2],
        pipeline=row[3],
        status=STATUSES[row[4]],
        input=load(row[5]),
        output=load(row[6]),
        error=RunError(**error) if error else None,
        metadata=load(row[8]),
        created_at=row[9],
        started_at=row[10],
        finished_at=row[11],
        last_seq=row[12],
        attempt=row[13],
        timeout_s=row[14],
        max_attempts=row[15],
        worker_id=row[16],
        lease_expires_at=row[17],
        waiting=load_wait(row[18]),
        executed_s=row[19],
        scheduled_for=row[20],
        webhook=row[21],
        trace=row[22],
    )


def session_row(session: Session) -> tuple[Any, ...]:
    """``session`` as the values of ``SESSION_FIELDS``."""
    return (
        session.session_id,
        session.owner,
        session.created_at,
        session.last_activity,
        dump(session.metadata),
        session.deleted,  # a bool: SQLite stores it as 1 or 0
    )


def session_from_row(row: Sequence[Any]) -> Session:
    """A session from a row of ``SESSION_FIELDS``."""
    return Session(row[0], row[1], row[2], row[3], load(row[4]), bool(row[5]))


def message_row(message: Message) -> tuple[Any, ...]:
    """``message`` as the values of ``MESSAGE_COLUMNS``."""
    return message.role, dump(message.content), message.ts, dump(message.extra)


def message_from_row(row: Sequence[Any]) -> Message:
    """A message from a row of ``MESSAGE_COLUMNS``."""
    return Message(row[0], load(row[1]), row[2], load(row[3]))


def update_fields(update: RunUpdate) -> list[tuple[str, Any]]:
    """The run fields ``update`` sets and their new values, in order (a later pair
    wins: ``clear_lease`` empties the lease, then a new worker or lease is set)."""
    fields: list[tuple[str, Any]] = []
    if update.status is not None:
        fields.append(("status", update.status))
    if update.set_output:
        fields.append(("output", update.output))
    if update.error is not None:
        fields.append(("error", update.error))
    if update.started_at is not None:
        fields.append(("started_at", update.started_at))
    if update.finished_at is not None:
        fields.append(("finished_at", update.finished_at))
    if update.attempt is not None:
        fields.append(("attempt", update.attempt))
    if update.clear_lease:
        fields += [("worker_id", None), ("lease_expires_at", None)]
    if update.worker_id is not None:
        fields.append(("worker_id", update.worker_id))
    if update.lease_expires_at is not None:
        fields.append(("lease_expires_at", update.lease_expires_at))
    if update.clear_waiting:
        fields.append(("waiting", None))
    if update.waiting is not None:
        fields.append(("waiting", update.waiting))
    if update.executed_s is not None:
        fields.append(("executed_s", update.executed_s))
    return fields


def apply_update(run: Any, update: RunUpdate, only: frozenset[str] | None = None) -> None:
    """Set ``update``'s fields on ``run`` (a ``Run``, or any object with those
    attributes: with ``only``, just the fields named there)."""
    for name, value in update_fields(update):
        if only is None or name in only:
            setattr(run, name, value)


def update_columns(updates: Iterable[RunUpdate]) -> dict[str, Any]:
    """Updates of one run as the column values they set, a later update winning
    (``wake_at`` follows ``waiting``)."""
    columns: dict[str, Any] = {}
    encoders = ENCODERS
    for update in updates:
        for name, value in update_fields(update):
            columns[name] = encoders[name](value) if name in encoders else value
            if name == "waiting":
                columns["wake_at"] = wake_at(value)
    return columns


def step_row(step: StepRecord) -> tuple[Any, ...]:
    """``step`` as the values of ``STEP_COLUMNS`` (its result as JSON text)."""
    return step.name, step.n, step.result.decode(), step.pos, step.at


def step_from_row(row: Sequence[Any]) -> StepRecord:
    """A step from a row of ``STEP_COLUMNS``."""
    result = row[2]
    return StepRecord(row[0], row[1], result.encode() if isinstance(result, str) else bytes(result), row[3], row[4])


ITEM_COLUMNS = "owner, namespace, key, value, created_at, updated_at, expires_at, embedding"


def item_row(item: Item) -> tuple[Any, ...]:
    """``item`` as the values of ``ITEM_COLUMNS``."""
    namespace, value, embedding = joined(item.namespace), dump(item.value), pack_vector(item.embedding)
    return item.owner, namespace, item.key, value, item.created_at, item.updated_at, item.expires_at, embedding


def item_from_row(row: Sequence[Any]) -> Item:
    """An item from a row of ``ITEM_COLUMNS``."""
    return Item(row[0], split(row[1]), row[2], load(row[3]), row[4], row[5], row[6], unpack_vector(row[7]))


# issue 13: crons
CRON_FIELDS: tuple[str, ...] = (
    "cron_id",
    "owner",
    "pipeline",
    "input",
    "schedule",
    "timezone",
    "created_at",
    "updated_at",
    "next_run_at",
    "enabled",
    "session_id",
    "metadata",
    "webhook",
    "last_run_id",
    "last_run_at",
)
CRON_COLUMNS = ", ".join(CRON_FIELDS)


def cron_row(cron: Cron) -> tuple[Any, ...]:
    """``cron`` as the values of ``CRON_FIELDS`` (JSON values as text, ``enabled`` a bool)."""
    return (
        cron.cron_id,
        cron.owner,
        cron.pipeline,
        dump(cron.input),
        cron.schedule,
        cron.timezone,
        cron.created_at,
        cron.updated_at,
        cron.next_run_at,
        cron.enabled,
        cron.session_id,
        dump(cron.metadata),
        dump(cron.webhook),
        cron.last_run_id,
        cron.last_run_at,
    )


def cron_from_row(row: Sequence[Any]) -> Cron:
    """A cron from a row of ``CRON_FIELDS``."""
    return Cron(
        cron_id=row[0],
        owner=row[1],
        pipeline=row[2],
        input=load(row[3]),
        schedule=row[4],
        timezone=row[5],
        created_at=row[6],
        updated_at=row[7],
        next_run_at=row[8],
        enabled=bool(row[9]),
        session_id=row[10],
        metadata=load(row[11]),
        webhook=load(row[12]),
        last_run_id=row[13],
        last_run_at=row[14],
    )
