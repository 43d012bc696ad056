"""``postgresql://user@host:port/db``: the shared store of a fleet of processes (asyncpg).

Every process has its own pool (``?pool_min=1&pool_max=10`` by default). Many
processes may append to one run at once: ``append`` locks the batch's runs rows
(``SELECT ... FOR UPDATE``, sorted by run id, so overlapping batches never
deadlock) and numbers events from the ``last_seq`` kept in each row, so the
row lock is the gap-free counter. A batch is one transaction of five round
trips however many runs and events it holds: BEGIN, lock, insert every event
(one ``unnest``), set every run's last seq (one ``unnest``), COMMIT; one more
when the batch carries run updates (status changes and the like).

Migrations run in one transaction holding a fixed advisory lock, so processes
starting together apply them once. Writes run in a shielded task: a cancelled
caller only stops waiting, and its write commits or fails whole, as in the
SQLite store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from runyard.errors import ConfigurationError, QuotaExceeded, StoreError, StoreUnavailable
from runyard.models import Event, Message, Multitask, Run, RunStatus, Session
from runyard.settings import redact_url
from runyard.store._numbering import RunState, cancel_group, cancellations, claim_group, number
from runyard.store._postgres_schema import (
    CLAIMABLE,
    DELETE_EVENT_CHUNK,
    DELETE_RUNS,
    EVENT_WEIGHTS,
    EXPIRED_RUNS,
    IDEMPOTENT_RUN,
    INSERT_EVENTS,
    INSERT_RUN,
    INSERT_SESSION,
    LOCK_CLAIMABLE,
    LOCK_RUNS,
    MIGRATION_LOCK,
    MIGRATIONS,
    RUN_COLUMNS,
    SESSION_COLUMNS,
    UNFINISHED,
    UNSERVED,
    UPDATABLE,
    UPDATE_LAST_SEQS,
    UPDATE_RUNS,
    VERSION_TABLE,
    run_from_record,
    run_row,
    session_from_record,
    session_row,
)
from runyard.store._sqlite_schema import dump, load, merged_columns
from runyard.store._sweep import CHUNK_BYTES, CHUNK_EVENTS, SWEEP_RUNS, pack
from runyard.store.base import (
    DEFAULT_MAX_RUN_BYTES,
    WORKER_FORGOTTEN_S,
    Admission,
    AppendGroup,
    AppendResult,
    Cancelled,
    Claimed,
    Entered,
    LeaseRenewal,
    SessionEntry,
    Store,
)
from runyard.store.memory import apply_update, check_entry

__all__ = ["MIGRATIONS", "PostgresStore", "pool_options"]

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
STATUSES = {status.value: status for status in RunStatus}  # a dict lookup, not an Enum call per row


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


async def _append(
    conn: Connection, groups: Sequence[AppendGroup], max_run_bytes: int | None = None
) -> list[AppendResult]:
    """Number, insert and apply ``groups`` inside the caller's transaction."""
    rows = await conn.fetch(LOCK_RUNS, sorted({group.run_id for group in groups}))
    runs = {
        run_id: RunState(STATUSES[status], last_seq, None, worker, attempt, lease, stored)
        for run_id, status, last_seq, worker, attempt, lease, stored in rows
    }
    results, events = number(groups, runs, max_run_bytes)
    if events:
        await conn.execute(
            INSERT_EVENTS,
            [e.run_id for e in events],
            [e.seq for e in events],
            [e.type for e in events],
            [e.data for e in events],
            [e.ts for e in events],
        )
    # a run with updated columns gets its last seq with them, the others by themselves
    counted = [(run_id, run) for run_id, run in runs.items() if run.appended and not run.updates]
    if counted:
        await conn.execute(
            UPDATE_LAST_SEQS,
            [run_id for run_id, _ in counted],
            [run.last_seq for _, run in counted],
            [run.stored_bytes for _, run in counted],
        )
    updated = [(run_id, merged_columns(run.updates)) for run_id, run in runs.items() if run.updates]
    if updated:
        arguments: list[list[Any]] = [
            [run_id for run_id, _ in updated],
            [runs[run_id].last_seq for run_id, _ in updated],
            [runs[run_id].stored_bytes for run_id, _ in updated],
        ]
        for column in UPDATABLE:
            arguments.append([column in columns for _, columns in updated])
            arguments.append([columns.get(column) for _, columns in updated])
        await conn.execute(UPDATE_RUNS, *arguments)
    return results


# A write whose COMMIT was cut off is settled by looking for its first event
# once the server answers again: for up to DOUBT_WAIT_S, every DOUBT_RETRY_S.
DOUBT_WAIT_S = 60.0
DOUBT_RETRY_S = 0.2
# Candidates read per claimed run: some may be taken by other workers meanwhile.
CANDIDATES_PER_CLAIM = 2
CANDIDATES_EXTRA = 8


async def _claim(
    conn: Connection, worker_id: str, limit: int, at: float, until: float, served: list[str]
) -> list[Claimed]:
    """Claim inside the caller's transaction (FOR UPDATE SKIP LOCKED)."""
    wanted = limit * CANDIDATES_PER_CLAIM + CANDIDATES_EXTRA
    candidates = [row[0] for row in await conn.fetch(CLAIMABLE, wanted, served)]
    if not candidates:
        return []
    locked = {row["run_id"]: row for row in await conn.fetch(LOCK_CLAIMABLE, candidates)}
    rows = [locked[run_id] for run_id in candidates if run_id in locked][:limit]
    runs = [run_from_record(row) for row in rows]
    groups = [claim_group(run.run_id, run.attempt, worker_id, at, until) for run in runs]
    claimed = []
    for run, row, group, result in zip(runs, rows, groups, await _append(conn, groups), strict=True):
        if isinstance(result, list) and group.update is not None:
            apply_update(run, group.update)
            run.last_seq = result[0].seq
            claimed.append(Claimed(run, result[0], cancel_requested=row["cancel_requested"]))
    # the unclaimed candidates stay locked until COMMIT: harmless, it is immediate
    return claimed


async def _cancel_unfinished(conn: Connection, session_id: str, at: float, sparing: str = "") -> list[Cancelled]:
    """Cancel the session's queued and running runs but ``sparing``, inside the
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
    return cancellations(session_id, runs, await _append(conn, [cancel_group(run[0], at) for run in runs]))


async def _enter(conn: Connection, run: Run, entry: SessionEntry, admission: Admission | None) -> Entered:
    """``enter_session`` inside the caller's transaction. The session's row lock
    comes first: creations in one session, and its deletion, take turns, each
    seeing what the one before committed (every statement of READ COMMITTED
    reads anew). Then the key's and the quota's rows, as ``create_run`` takes
    them, then the runs' rows, as ``append`` does: one order, no deadlock."""
    found = await conn.fetchrow(
        f"SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = $1 FOR UPDATE", run.session_id
    )
    if admission is not None:
        first = await _admit(conn, run, admission)  # rolled back with the rest if a check below fails
        if first is not None:
            return Entered(first)
    busy = await conn.fetchval(
        f"SELECT run_id FROM runs WHERE session_id = $1 AND {UNFINISHED} ORDER BY created_seq LIMIT 1",
        run.session_id,
    )
    check_entry(None if found is None else session_from_record(found), run, entry, busy)
    cancelled = []
    if busy is not None and entry.multitask is Multitask.INTERRUPT:
        cancelled = await _cancel_unfinished(conn, run.session_id, run.created_at)
    await conn.execute(INSERT_RUN, *run_row(run))
    await conn.execute(
        "UPDATE sessions SET last_activity = greatest(last_activity, $2) WHERE session_id = $1",
        run.session_id,
        run.created_at,
    )
    return Entered(run, cancelled)


async def _admit(conn: Connection, run: Run, admission: Admission) -> Run | None:
    """Inside the creation's transaction: the first run of a repeated key, or None
    once ``run`` is admitted (and counted). Racing creations with one key meet at
    its row (the second waits for the first to commit, then finds its run), and
    racing creations of one owner at its quota row, so exactly N are admitted."""
    key = admission.idempotency_key
    if key is not None:
        claimed = await conn.fetchval(
            "INSERT INTO idempotency_keys (owner, key, fingerprint, run_id, created_at) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (owner, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, run_id = EXCLUDED.run_id,"
            " created_at = EXCLUDED.created_at WHERE idempotency_keys.created_at < $6 RETURNING 1",
            run.owner,
            key,
            admission.fingerprint,
            run.run_id,
            run.created_at,
            admission.since,
        )
        if claimed is None:
            # a statement of its own: its snapshot sees the run of a racing creation that just committed
            row = await conn.fetchrow(IDEMPOTENT_RUN, run.owner, key, 0.0)
            if row is not None:
                return admission.repeat_of(row["fingerprint"], run_from_record(row))
            await conn.execute(  # the first run was swept: the key is as good as new
                "UPDATE idempotency_keys SET fingerprint = $3, run_id = $4, created_at = $5"
                " WHERE owner = $1 AND key = $2",
                run.owner,
                key,
                admission.fingerprint,
                run.run_id,
                run.created_at,
            )
    if admission.quota is not None:
        counted = await conn.fetchval(
            "INSERT INTO owner_quota (owner, runs_created) VALUES ($1, 1) ON CONFLICT (owner) DO UPDATE"
            " SET runs_created = owner_quota.runs_created + 1 WHERE owner_quota.runs_created < $2 RETURNING 1",
            run.owner,
            admission.quota,
        )
        if counted is None or admission.quota < 1:
            raise QuotaExceeded(f"owner {run.owner!r} has created all {admission.quota} runs of its quota")
    return None


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


class PostgresStore(Store):
    """PostgreSQL through an asyncpg pool; safe to share between many processes."""

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
        return [run_from_record(row) for row in await self._db().fetch(sql, *arguments)]

    # -- sessions and memory ---------------------------------------------------

    async def create_session(self, session: Session) -> None:
        await self._execute(INSERT_SESSION, *session_row(session))

    async def get_session(self, session_id: str) -> Session | None:
        row = await self._db().fetchrow(f"SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = $1", session_id)
        return None if row is None else session_from_record(row)

    async def touch_session(self, session_id: str, at: float) -> None:
        await self._execute(
            "UPDATE sessions SET last_activity = $2 WHERE session_id = $1 AND last_activity < $2", session_id, at
        )

    async def delete_session(self, session_id: str, at: float) -> list[Cancelled]:
        async def work(conn: Connection) -> list[Cancelled]:
            # the UPDATE takes the session's row lock first, as _enter does
            await conn.execute("UPDATE sessions SET deleted = true WHERE session_id = $1", session_id)
            await conn.execute("DELETE FROM messages WHERE session_id = $1", session_id)
            return await _cancel_unfinished(conn, session_id, at)

        return await self._transact(work)

    async def forget_idle_sessions(self, idle_before: float) -> int:
        # a session with a run still queued or running is busy, never idle
        forgotten: int = await asyncio.shield(
            self._db().fetchval(
                "WITH gone AS (DELETE FROM messages m USING sessions s"
                " WHERE m.session_id = s.session_id AND s.last_activity < $1 AND NOT EXISTS"
                f" (SELECT 1 FROM runs r WHERE r.session_id = s.session_id AND r.{UNFINISHED})"
                " RETURNING m.session_id) SELECT count(DISTINCT session_id) FROM gone",
                idle_before,
            )
        )
        return forgotten

    async def history(self, session_id: str) -> list[Message]:
        rows = await self._db().fetch(
            "SELECT role, content, ts, extra FROM messages WHERE session_id = $1 ORDER BY message_id", session_id
        )
        return [Message(row[0], load(row[1]), row[2], load(row[3])) for row in rows]

    async def append_message(self, session_id: str, message: Message, keep: int) -> None:
        async def work(conn: Connection) -> None:
            await conn.execute(
                "INSERT INTO messages (session_id, role, content, ts, extra) VALUES ($1, $2, $3, $4, $5)",
                session_id,
                message.role,
                dump(message.content),
                message.ts,
                dump(message.extra),
            )
            # everything at or below the (keep + 1)-th newest goes
            await conn.execute(
                "DELETE FROM messages WHERE session_id = $1 AND message_id <= (SELECT message_id FROM messages"
                " WHERE session_id = $1 ORDER BY message_id DESC LIMIT 1 OFFSET $2)",
                session_id,
                max(keep, 0),
            )

        await self._transact(work)

    # -- runs ------------------------------------------------------------------

    async def create_run(self, run: Run, new_session: Session | None = None, admission: Admission | None = None) -> Run:
        if new_session is None and admission is None:
            await self._execute(INSERT_RUN, *run_row(run))
            return run

        async def work(conn: Connection) -> Run:
            if admission is not None:
                first = await _admit(conn, run, admission)
                if first is not None:
                    return first
            if new_session is not None:
                await conn.execute(INSERT_SESSION, *session_row(new_session))
            await conn.execute(INSERT_RUN, *run_row(run))
            return run

        return await self._transact(work)

    async def enter_session(self, run: Run, entry: SessionEntry, admission: Admission | None = None) -> Entered:
        return await self._transact(lambda conn: _enter(conn, run, entry, admission))

    async def idempotent_run(self, owner: str, key: str, since: float) -> tuple[str, Run] | None:
        row = await self._db().fetchrow(IDEMPOTENT_RUN, owner, key, since)
        return None if row is None else (row["fingerprint"], run_from_record(row))

    async def forget_idempotency_keys(self, before: float) -> int:
        rows = await asyncio.shield(
            self._db().fetch("DELETE FROM idempotency_keys WHERE created_at < $1 RETURNING 1", before)
        )
        return len(rows)

    async def get_run(self, run_id: str) -> Run | None:
        row = await self._db().fetchrow(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = $1", run_id)
        return None if row is None else run_from_record(row)

    async def list_runs(
        self,
        owner: str | None,
        *,
        session_id: str | None = None,
        statuses: Sequence[RunStatus] | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[Run]:
        if limit <= 0:
            return []
        where: list[str] = []
        arguments: list[Any] = []

        def condition(sql: str, argument: Any) -> None:
            arguments.append(argument)
            where.append(sql.replace("?", f"${len(arguments)}"))

        if owner is not None:
            condition("owner = ?", owner)
        if session_id is not None:
            condition("session_id = ?", session_id)
        if statuses:
            condition("status = ANY(?::text[])", [s.value for s in statuses])
        if before is not None:
            # an unknown cursor compares with NULL: nothing is older than it
            condition("created_seq < (SELECT created_seq FROM runs WHERE run_id = ?)", before)
        arguments.append(limit)
        return await self._runs(
            f"SELECT {RUN_COLUMNS} FROM runs {'WHERE ' + ' AND '.join(where) if where else ''}"
            f" ORDER BY created_seq DESC LIMIT ${len(arguments)}",
            *arguments,
        )

    async def runs_with_status(self, statuses: Iterable[RunStatus]) -> list[Run]:
        return await self._runs(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE status = ANY($1::text[]) ORDER BY created_seq",
            [s.value for s in statuses],
        )

    async def count_queued(self) -> int:
        count: int = await self._db().fetchval("SELECT count(*) FROM runs WHERE status = 'queued'")
        return count

    async def unfinished_runs(self, session_id: str) -> list[Run]:
        return await self._runs(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE session_id = $1 AND {UNFINISHED} ORDER BY created_seq", session_id
        )

    async def expired_leases(self, at: float) -> list[Run]:
        return await self._runs(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE status = 'running' AND lease_expires_at < $1 ORDER BY created_seq",
            at,
        )

    async def claim(
        self, worker_id: str, limit: int, at: float, lease_until: float, *, pipelines: Collection[str]
    ) -> list[Claimed]:
        if limit <= 0:
            return []
        served = list(pipelines)
        claimed = await self._transact_once(
            lambda conn: _claim(conn, worker_id, limit, at, lease_until, served),
            lambda result: result[0].event if result else None,
        )
        return claimed

    async def request_cancel(self, run_id: str) -> None:
        await self._execute("UPDATE runs SET cancel_requested = true WHERE run_id = $1 AND status = 'running'", run_id)

    async def renew_leases(self, worker_id: str, run_ids: Sequence[str], until: float) -> LeaseRenewal:
        if not run_ids:
            return LeaseRenewal()
        # rows locked in run id order, as append locks them: the two never deadlock
        rows = await asyncio.shield(
            self._db().fetch(
                "UPDATE runs SET lease_expires_at = $3 WHERE run_id IN (SELECT run_id FROM runs"
                " WHERE run_id = ANY($1::text[]) AND status = 'running' AND worker_id = $2 ORDER BY run_id FOR UPDATE)"
                " RETURNING run_id, cancel_requested",
                list(run_ids),
                worker_id,
                until,
            )
        )
        kept = {row[0] for row in rows}
        return LeaseRenewal(lost=set(run_ids) - kept, cancel={row[0] for row in rows if row[1]})

    async def worker_seen(self, worker_id: str, pipelines: Collection[str], at: float) -> None:
        await self._execute(
            "WITH gone AS (DELETE FROM workers WHERE last_seen < $4 AND worker_id <> $1)"
            " INSERT INTO workers (worker_id, pipelines, last_seen) VALUES ($1, $2, $3) ON CONFLICT (worker_id)"
            " DO UPDATE SET pipelines = EXCLUDED.pipelines, last_seen = EXCLUDED.last_seen",
            worker_id,
            sorted(pipelines),
            at,
            at - WORKER_FORGOTTEN_S,
        )

    async def forget_worker(self, worker_id: str) -> None:
        await self._execute("DELETE FROM workers WHERE worker_id = $1", worker_id)

    async def unserved_pipelines(self, seen_since: float) -> dict[str, int]:
        return {row[0]: row[1] for row in await self._db().fetch(UNSERVED, seen_since)}

    async def sweep_runs(self, finished_before: float) -> int:
        """In bounded deletes (``_sweep``), each a transaction of its own: no single
        transaction writes a whole run's events to the WAL or holds its rows for long.
        Processes sweeping at once only find less to delete."""
        swept = 0
        while True:
            rows = await self._db().fetch(EXPIRED_RUNS, finished_before, SWEEP_RUNS)
            if not rows:
                return swept
            run_ids = [row[0] for row in rows]
            weights = {row[0]: (row[1], row[2]) for row in await self._db().fetch(EVENT_WEIGHTS, run_ids)}
            small, large = pack([(r, *weights.get(r, (0, 0))) for r in run_ids], CHUNK_EVENTS, CHUNK_BYTES)
            for group in small:  # several small runs, events and all, in one transaction
                swept += await asyncio.shield(self._db().fetchval(DELETE_RUNS, group))
            for run_id in large:  # a large one chunk by chunk
                while await asyncio.shield(self._db().fetchval(DELETE_EVENT_CHUNK, run_id, CHUNK_EVENTS, CHUNK_BYTES)):
                    pass
                swept += await asyncio.shield(self._db().fetchval(DELETE_RUNS, [run_id]))

    # -- events ----------------------------------------------------------------

    async def append(self, groups: Sequence[AppendGroup]) -> list[AppendResult]:
        if not groups:
            return []
        return await self._transact_once(
            lambda conn: _append(conn, groups, self.max_run_bytes),
            lambda results: next((result[0] for result in results if isinstance(result, list) and result), None),
        )

    async def read_events(self, run_id: str, after: int, limit: int) -> list[Event]:
        rows = await self._db().fetch(
            "SELECT seq, type, data, ts FROM events WHERE run_id = $1 AND seq > $2::int8 ORDER BY seq LIMIT $3",
            run_id,
            after,
            max(limit, 0),
        )
        return [Event(run_id, seq, type_, data, ts) for seq, type_, data, ts in rows]
