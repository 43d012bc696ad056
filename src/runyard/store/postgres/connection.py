"""The PostgreSQL store's connections: an asyncpg pool, transactions that finish
even when their caller is cancelled, and the store's lifecycle.

Every process has its own pool (``?pool_min=1&pool_max=10`` by default).
Migrations run in one transaction holding a fixed advisory lock, so processes
starting together apply them once. Writes run in a shielded task: a cancelled
caller only stops waiting, and its write commits or fails whole, as in the
SQLite store.

Every asyncpg error that means "busy or down, try again" becomes
``StoreUnavailable`` here, in ``_unavailable`` and nowhere else (HTTP: 503 with
``Retry-After``). A deadlock or a serialization failure rolled its transaction
back, so it is tried again a few times first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from runyard.errors import StoreError, StoreUnavailable
from runyard.models import Event, Run
from runyard.retrying import Backoff
from runyard.settings import redact_url
from runyard.store._rows import run_from_row
from runyard.store.base import DEFAULT_MAX_RUN_BYTES, Lifecycle
from runyard.store.postgres.pool import keep_session, learn_array_types, pool_options, server_settings
from runyard.store.postgres.schema import MIGRATION_LOCK, MIGRATIONS, VERSION_TABLE

T = TypeVar("T")
Connection = Any  # asyncpg.Connection (untyped)

log = logging.getLogger("runyard.store")

# How long a call waits for one of the pool's connections (all busy, or a new one
# being made) before it answers 503: a store that slow is down for its callers,
# and a request held longer only piles up behind the others.
ACQUIRE_TIMEOUT_S = 10.0
# errors that mean "PostgreSQL is not there (or refuses us)"
CONNECT_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)
# The server undid the statement and said so; the connection is fine and nothing
# was written (a transaction in which it happens is rolled back whole).
CONFLICTS = (
    asyncpg.exceptions.DeadlockDetectedError,  # 40P01: this transaction was the one PostgreSQL chose to end
    asyncpg.exceptions.SerializationError,  # 40001
)
REFUSED = (
    *CONFLICTS,
    asyncpg.exceptions.LockNotAvailableError,  # 55P03: past lock_timeout, or NOWAIT
    asyncpg.exceptions.QueryCanceledError,  # 57014: past statement_timeout, or pg_cancel_backend
    # on connecting: nothing ran
    asyncpg.exceptions.TooManyConnectionsError,  # 53300: max_connections, or a role's or database's limit
    asyncpg.exceptions.CannotConnectNowError,  # 57P03: the server starts up or shuts down
)
# The connection is gone (a restart, an administrator's pg_terminate_backend, a
# network failure): a statement sent before it may or may not have run. Checked
# after REFUSED: QueryCanceledError and CannotConnectNowError are
# OperatorInterventionErrors too.
CONNECTION_LOST = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # 57P01 admin shutdown, 57P02 crash shutdown
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,  # a connection left mid-operation by a lost server
    asyncpg.exceptions.IdleInTransactionSessionTimeoutError,  # 25P03: this process stalled mid-transaction
)
UNAVAILABLE = (*REFUSED, *CONNECTION_LOST)
# A deadlocked or serialization-failed transaction was rolled back, so it is run
# again, from the start, up to CONFLICT_ATTEMPTS times in all (PostgreSQL takes its
# deadlock_timeout, 1 s by default, to find each deadlock) before the caller gets a 503.
CONFLICT_ATTEMPTS = 3
CONFLICT_BACKOFF = Backoff(first_s=0.02, max_s=0.2)


@dataclass(slots=True)
class _Progress:
    """How far a call got, which says whether its failure leaves a write in doubt."""

    connected: bool = False  # it holds a connection of the pool
    sent: bool = False  # a statement that may write went to the server (in doubt if the connection is lost)


def _unavailable(exc: BaseException, where: str, progress: _Progress) -> StoreUnavailable:
    """The ``StoreUnavailable`` that ``exc``, one of ``UNAVAILABLE``, means.

    In doubt only when the connection was lost after a write was sent (a single
    statement, or a transaction's COMMIT): PostgreSQL may have committed it. An
    error the server answered with, or anything before a connection was had,
    wrote nothing."""
    if isinstance(exc, CONFLICTS):
        return StoreUnavailable(f"PostgreSQL at {where} ended a conflicting transaction: {exc}", in_doubt=False)
    if isinstance(exc, REFUSED):
        return StoreUnavailable(f"PostgreSQL at {where} is busy or refuses connections: {exc}", in_doubt=False)
    if isinstance(exc, TimeoutError) and not progress.connected:  # pool.acquire's timeout
        return StoreUnavailable(
            f"no connection to PostgreSQL at {where} came free within {ACQUIRE_TIMEOUT_S:g}s", in_doubt=False
        )
    return StoreUnavailable(f"lost the connection to PostgreSQL at {where}: {exc}", in_doubt=progress.sent)


def _lost(exc: BaseException) -> bool:
    return isinstance(exc, CONNECTION_LOST) and not isinstance(exc, REFUSED)


async def _retrying_conflicts(attempt: Callable[[], Awaitable[T]]) -> T:
    """``await attempt()``, again after a deadlock or a serialization failure, up to
    ``CONFLICT_ATTEMPTS`` times (the last failure is raised). Each attempt starts
    from nothing: PostgreSQL rolled back the one before."""
    failures = 0
    while True:
        try:
            return await attempt()
        except CONFLICTS as exc:
            failures += 1
            if failures >= CONFLICT_ATTEMPTS:
                raise
            log.info("PostgreSQL ended a conflicting transaction, trying it again (%d): %s", failures, exc)
            await asyncio.sleep(CONFLICT_BACKOFF.delay(failures))


# A write whose COMMIT was cut off is settled by looking for its first event
# once the server answers again: for up to DOUBT_WAIT_S, every DOUBT_RETRY_S.
DOUBT_WAIT_S = 60.0
DOUBT_RETRY_S = 0.2


def _forget_if_lost(conn: Connection, exc: BaseException) -> None:
    if _lost(exc):
        # never back into the pool: after a lost server, asyncpg may think an
        # operation is still under way on it
        with contextlib.suppress(Exception):
            conn.terminate()


async def _statement(pool: Any, method: str, sql: str, arguments: tuple[Any, ...], progress: _Progress) -> Any:
    """One attempt at one statement (a transaction by itself)."""
    progress.connected = progress.sent = False
    async with pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
        progress.connected = progress.sent = True
        try:
            return await getattr(conn, method)(sql, *arguments)
        except BaseException as exc:
            _forget_if_lost(conn, exc)
            raise


async def _transaction(pool: Any, work: Callable[[Connection], Awaitable[T]], progress: _Progress) -> T:
    """One attempt at ``work`` in a transaction."""
    progress.connected = progress.sent = False
    async with pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
        progress.connected = True
        tx = conn.transaction()
        try:
            await tx.start()
            try:
                result = await work(conn)
            except BaseException:
                if not conn.is_closed():
                    await tx.rollback()
                raise
            progress.sent = True  # until COMMIT, a lost connection rolls the transaction back
            await tx.commit()
            return result
        except BaseException as exc:
            _forget_if_lost(conn, exc)
            raise


class _Statements:
    """One-statement calls on the pool, "busy or down" reported as ``StoreUnavailable``
    (in doubt if the connection was lost after the statement was sent)."""

    def __init__(self, pool: Any, where: str) -> None:
        self._pool = pool
        self._where = where

    async def fetch(self, sql: str, *arguments: Any) -> list[Any]:
        return await self._call("fetch", sql, arguments)  # type: ignore[no-any-return]

    async def fetchrow(self, sql: str, *arguments: Any) -> Any:
        return await self._call("fetchrow", sql, arguments)

    async def fetchval(self, sql: str, *arguments: Any) -> Any:
        return await self._call("fetchval", sql, arguments)

    async def execute(self, sql: str, *arguments: Any) -> None:
        await self._call("execute", sql, arguments)

    async def _call(self, method: str, sql: str, arguments: tuple[Any, ...]) -> Any:
        progress = _Progress()
        try:
            return await _retrying_conflicts(lambda: _statement(self._pool, method, sql, arguments, progress))
        except UNAVAILABLE as exc:
            raise _unavailable(exc, self._where, progress) from exc


class PostgresConnection(Lifecycle):
    """An asyncpg pool, its transactions, and the store's lifecycle."""

    def __init__(
        self,
        url: str = "postgresql://postgres@localhost:5432/runyard",
        max_run_bytes: int | None = DEFAULT_MAX_RUN_BYTES,
        lease_s: float | None = None,
    ) -> None:
        self.url = url
        # the URL as messages name it, made once: redacting it parsed the URL
        # (4.5 µs) on every statement and transaction, for messages seldom written
        self._where = redact_url(url)  # without its password
        self.max_run_bytes = max_run_bytes
        self._dsn, self._pool_min, self._pool_max = pool_options(url)
        self._server_settings = server_settings(self._dsn, lease_s)
        self._pool: Any = None  # asyncpg.Pool; None when not open

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self._pool_min,
                max_size=self._pool_max,
                server_settings=self._server_settings,
                init=learn_array_types,
                reset=keep_session,
            )
        except CONNECT_ERRORS as exc:
            raise StoreError(f"cannot connect to PostgreSQL at {self._where}: {exc}") from exc
        try:
            await self.migrate()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None  # from here on, every call raises StoreError
        if pool is not None:
            await pool.close()  # waits for the connections in use, shielded writes included

    async def ping(self) -> None:
        await self._db().fetchval("SELECT 1")

    async def migrate(self) -> int:
        return await self._transact(self._migrate)

    async def _migrate(self, conn: Connection) -> int:
        # the lock is held until this transaction ends: one process at a time migrates
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(VERSION_TABLE)
        current: int = await conn.fetchval("SELECT coalesce(max(version), 0) FROM runyard_schema_version")
        if current > len(MIGRATIONS):
            raise StoreError(f"{self._where} has schema version {current}, newer than this runyard's {len(MIGRATIONS)}")
        for statement in MIGRATIONS[current:]:
            await conn.execute(statement)
        if current < len(MIGRATIONS):
            await conn.execute(
                "INSERT INTO runyard_schema_version (version) SELECT generate_series($1::int, $2::int)",
                current + 1,
                len(MIGRATIONS),
            )
        return len(MIGRATIONS)

    # -- plumbing --------------------------------------------------------------

    def _live(self) -> Any:
        pool = self._pool
        if pool is None:
            raise StoreError(f"store {self._where} is not open")
        return pool

    def _db(self) -> _Statements:
        return _Statements(self._live(), self._where)

    async def _transact(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        """Run ``work`` in a transaction of its own, to the end even if the caller is
        cancelled; again after a deadlock; "busy or down" is ``StoreUnavailable``,
        in doubt only if the connection was lost during COMMIT."""
        pool, where = self._live(), self._where

        async def transaction() -> T:
            progress = _Progress()
            try:
                return await _retrying_conflicts(lambda: _transaction(pool, work, progress))
            except UNAVAILABLE as exc:
                raise _unavailable(exc, where, progress) from exc

        return await asyncio.shield(transaction())

    async def _transact_once(
        self, work: Callable[[Connection], Awaitable[T]], first_event: Callable[[T], Event | None]
    ) -> T:
        """``_transact`` for writes that number events, never left in doubt.

        When the connection is lost during COMMIT, the write may or may not have
        happened: once the server answers again, the first event it numbered
        tells which. Written, its result stands; not, it is ``StoreUnavailable``
        with nothing written, which the caller may simply try again. So a
        restart of PostgreSQL neither loses nor repeats an event."""
        outcome: list[T] = []

        async def keeping(conn: Connection) -> T:
            result = await work(conn)
            outcome[:] = [result]  # the last attempt's: one ended by a conflict was rolled back
            return result

        try:
            return await self._transact(keeping)
        except StoreUnavailable as exc:
            if not exc.in_doubt or not outcome:
                raise
            probe = first_event(outcome[0])
            if probe is None:
                raise  # it wrote no event to look for
            if await self._was_written(probe, exc):
                return outcome[0]
            raise StoreUnavailable(f"{exc} (nothing was written)", in_doubt=False) from exc

    async def _was_written(self, event: Event, doubt: StoreUnavailable) -> bool:
        deadline = asyncio.get_running_loop().time() + DOUBT_WAIT_S
        while True:
            try:
                ts = await self._db().fetchval(
                    "SELECT ts FROM events WHERE run_id = $1 AND seq = $2", event.run_id, event.seq
                )
            except StoreUnavailable:
                if asyncio.get_running_loop().time() > deadline:
                    raise doubt from None
                await asyncio.sleep(DOUBT_RETRY_S)
                continue
            return bool(ts == event.ts)  # another writer's event at that seq would be another time

    async def _execute(self, sql: str, *arguments: Any) -> None:
        """One write statement (a transaction by itself)."""
        await asyncio.shield(self._db().execute(sql, *arguments))

    async def _runs(self, sql: str, *arguments: Any) -> list[Run]:
        return [run_from_row(row) for row in await self._db().fetch(sql, *arguments)]
