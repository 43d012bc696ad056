"""The PostgreSQL store's connections: an asyncpg pool, transactions that finish
even when their caller is cancelled, and the store's lifecycle.

Every process has its own pool (``?pool_min=1&pool_max=10`` by default).
Migrations run in one transaction holding a fixed advisory lock, so processes
starting together apply them once. Writes run in a shielded task: a cancelled
caller only stops waiting, and its write commits or fails whole, as in the
SQLite store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from runyard.errors import ConfigurationError, StoreError, StoreUnavailable
from runyard.models import Event, Run
from runyard.settings import redact_url
from runyard.store._rows import run_from_row
from runyard.store.base import DEFAULT_MAX_RUN_BYTES, Lifecycle
from runyard.store.postgres.schema import MIGRATION_LOCK, MIGRATIONS, VERSION_TABLE

T = TypeVar("T")
Connection = Any  # asyncpg.Connection (untyped)

POOL_MIN = 1
POOL_MAX = 10
# errors that mean "PostgreSQL is not there (or refuses us)"
CONNECT_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)
# errors that mean "the connection is gone" (a restart, a network failure): the
# statement did not run, or, during COMMIT, may have
CONNECTION_LOST = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # the server is shutting down or starting up
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,  # a connection left mid-operation by a lost server
)
# errors that mean "PostgreSQL is up but takes no more connections now" (its
# max_connections reached): nothing ran, the request may be tried again (503)
REFUSED = (asyncpg.exceptions.TooManyConnectionsError,)


def pool_options(url: str) -> tuple[str, int, int]:
    """The DSN for asyncpg (runyard's own ``pool_min``/``pool_max`` taken out) and the pool bounds."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {key: value for key, value in query if key in ("pool_min", "pool_max")}
    if not own:
        return url, POOL_MIN, POOL_MAX
    try:
        low, high = int(own.get("pool_min", POOL_MIN)), int(own.get("pool_max", POOL_MAX))
    except ValueError as exc:
        raise ConfigurationError(f"bad PostgreSQL URL: pool_min and pool_max are integers ({exc})") from exc
    if not 0 <= low <= high or high < 1:
        raise ConfigurationError(
            f"bad PostgreSQL URL: need 0 <= pool_min <= pool_max and pool_max >= 1, not {low}, {high}"
        )
    rest = urlencode([(key, value) for key, value in query if key not in own])
    return urlunsplit(parts._replace(query=rest)), low, high


def _where(url: str) -> str:
    """``url`` without its password, for messages."""
    return redact_url(url)


# A write whose COMMIT was cut off is settled by looking for its first event
# once the server answers again: for up to DOUBT_WAIT_S, every DOUBT_RETRY_S.
DOUBT_WAIT_S = 60.0
DOUBT_RETRY_S = 0.2


class _Statements:
    """One-statement calls on the pool, a lost connection reported as
    ``StoreUnavailable`` (in doubt: a write may have committed)."""

    def __init__(self, pool: Any, where: str) -> None:
        self._pool = pool
        self._where = where

    async def fetch(self, sql: str, *arguments: Any) -> list[Any]:
        return await self._call(self._pool.fetch, sql, arguments)  # type: ignore[no-any-return]

    async def fetchrow(self, sql: str, *arguments: Any) -> Any:
        return await self._call(self._pool.fetchrow, sql, arguments)

    async def fetchval(self, sql: str, *arguments: Any) -> Any:
        return await self._call(self._pool.fetchval, sql, arguments)

    async def execute(self, sql: str, *arguments: Any) -> None:
        await self._call(self._pool.execute, sql, arguments)

    async def _call(self, method: Callable[..., Awaitable[Any]], sql: str, arguments: tuple[Any, ...]) -> Any:
        try:
            return await method(sql, *arguments)
        except CONNECTION_LOST as exc:
            raise StoreUnavailable(f"lost the connection to PostgreSQL at {self._where}: {exc}", in_doubt=True) from exc
        except REFUSED as exc:
            raise StoreUnavailable(f"PostgreSQL at {self._where} refuses connections: {exc}", in_doubt=False) from exc


class PostgresConnection(Lifecycle):
    """An asyncpg pool, its transactions, and the store's lifecycle."""

    def __init__(
        self,
        url: str = "postgresql://postgres@localhost:5432/runyard",
        max_run_bytes: int | None = DEFAULT_MAX_RUN_BYTES,
    ) -> None:
        self.url = url
        self.max_run_bytes = max_run_bytes
        self._dsn, self._pool_min, self._pool_max = pool_options(url)
        named = any(key == "application_name" for key, _ in parse_qsl(urlsplit(self._dsn).query))
        # shows in pg_stat_activity; a URL's own ?application_name= wins
        self._server_settings = {} if named else {"application_name": "runyard"}
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
            )
        except CONNECT_ERRORS as exc:
            raise StoreError(f"cannot connect to PostgreSQL at {_where(self.url)}: {exc}") from exc
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
            raise StoreError(
                f"{_where(self.url)} has schema version {current}, newer than this runyard's {len(MIGRATIONS)}"
            )
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
            raise StoreError(f"store {_where(self.url)} is not open")
        return pool

    def _db(self) -> _Statements:
        return _Statements(self._live(), _where(self.url))

    async def _transact(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        """Run ``work`` in a transaction of its own, to the end even if the caller is
        cancelled; a lost connection is ``StoreUnavailable``, in doubt only if it
        was lost during COMMIT."""
        pool = self._live()

        async def transaction() -> T:
            committing = False
            try:
                async with pool.acquire() as conn:
                    tx = conn.transaction()
                    try:
                        await tx.start()
                        try:
                            result = await work(conn)
                        except BaseException:
                            if not conn.is_closed():
                                await tx.rollback()
                            raise
                        committing = True
                        await tx.commit()
                        return result
                    except CONNECTION_LOST:
                        # never back into the pool: after a lost server, asyncpg may
                        # think an operation is still under way on it
                        with contextlib.suppress(Exception):
                            conn.terminate()
                        raise
            except CONNECTION_LOST as exc:
                raise StoreUnavailable(
                    f"lost the connection to PostgreSQL at {_where(self.url)}: {exc}", in_doubt=committing
                ) from exc
            except REFUSED as exc:  # on connecting: nothing ran
                raise StoreUnavailable(
                    f"PostgreSQL at {_where(self.url)} refuses connections: {exc}", in_doubt=False
                ) from exc

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
            outcome.append(result)
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
