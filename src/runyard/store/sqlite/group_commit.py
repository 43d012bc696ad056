"""The SQLite writer's group commit: a batch of writes run in one transaction in
the writer thread, each write's outcome answered to its caller in the loop
(``connection.py`` queues the writes and hands the batches to the thread)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], T]
Batch = list[tuple[Work[Any], "asyncio.Future[Any]"]]  # writes, each with its caller's future


class _WorkFailed(Exception):
    """A work of a batch run without savepoints raised (its exception is the cause)."""


def answer(batch: Batch, outcomes: list[Any]) -> None:
    """Each write's outcome to its caller (in the loop)."""
    for (_, done), outcome in zip(batch, outcomes, strict=True):
        if done.done():  # its caller was cancelled
            continue
        if isinstance(outcome, BaseException):  # no work returns an exception
            done.set_exception(outcome)
        else:
            done.set_result(outcome)


def commit(db: sqlite3.Connection, works: list[Work[Any]], forget: Callable[[], None]) -> list[Any]:
    """Run ``works`` in one transaction (in the writer thread).

    Returns each work's result, or the exception it raised (then none of its
    writes stay). Raises, with nothing written, if the transaction as a whole fails.

    The batch runs first without a savepoint per work: every statement hands the
    GIL back and waits for it again, and while the loop is busy those waits are
    most of a batch's time (100 creations, 400-500 statements, took 100-190 ms of
    wall time for 12-40 ms of the thread's CPU; without the savepoints the wall
    time per work fell from 0.69 to 0.36-0.55 ms). Works rarely raise; when one
    does, that attempt is rolled back whole, ``forget`` drops what the writer's
    cache learned from it, and the batch runs again, each work in its savepoint,
    so that only the one that raised fails (the cache is forgotten again).
    Whatever is rolled back, the cache is forgotten, so works may update it as
    they go (``append_batch`` does).
    """
    try:
        with _transaction(db):
            return _together(db, works)
    except _WorkFailed as failed:
        forget()
        if len(works) == 1:
            return [failed.__cause__]  # the transaction held nothing else
        with _transaction(db):
            return [_alone(db, work, forget) for work in works]


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _together(db: sqlite3.Connection, works: list[Work[Any]]) -> list[Any]:
    outcomes = []
    for work in works:
        try:
            outcomes.append(work(db))
        except Exception as exc:
            if not db.in_transaction:  # SQLite rolled everything back (a full disk, an I/O error)
                raise
            raise _WorkFailed from exc
    return outcomes


def _alone(db: sqlite3.Connection, work: Work[Any], forget: Callable[[], None]) -> Any:
    """``work``'s result, or the exception it raised, its writes rolled back
    and what the cache learned from them forgotten."""
    db.execute("SAVEPOINT w")
    try:
        return work(db)
    except Exception as exc:
        if not db.in_transaction:  # SQLite rolled everything back (a full disk, an I/O error)
            raise
        db.execute("ROLLBACK TO w")
        forget()
        return exc
    finally:
        if db.in_transaction:
            db.execute("RELEASE w")
