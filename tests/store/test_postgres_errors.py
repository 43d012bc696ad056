"""PostgreSQL saying "busy, try again" is ``StoreUnavailable`` (HTTP 503 with
``Retry-After``), never a raw asyncpg error (500): deadlocks, lock and statement
timeouts, a pool with no connection free, a connection terminated mid-call. A
deadlocked transaction was rolled back, so the store runs it again first.

``in_doubt`` says whether a write may have happened: only when the connection
was lost after a write was sent (a single statement, or COMMIT).

Every test provokes the real error on a real server, in a database of its own;
the store's backend is always the one PostgreSQL ends (its ``deadlock_timeout``
is 100 ms, the other connection's 10 s).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from runyard.errors import StoreUnavailable
from runyard.models import EventDraft, Run, RunStatus, RunUpdate, Session
from runyard.store import AppendGroup
from runyard.store.postgres import PostgresStore
from runyard.store.postgres import connection as pg_connection
from runyard.store.postgres.connection import _Progress, _unavailable
from tests.governance.support import wait_until

pytestmark = pytest.mark.postgres

T0 = 1_700_000_000.0
SESSION = Session("ses_busy", "alice", created_at=T0, last_activity=T0)
RUNNING = frozenset({RunStatus.RUNNING})
RUN = Run("run_busy", "ses_busy", "alice", "ticker", RunStatus.QUEUED, created_at=T0, input={"count": 1})


def with_settings(url: str, **settings: str) -> str:
    """``url`` with server settings (asyncpg passes unknown query parameters on to the server)."""
    return url + ("&" if "?" in url else "?") + "&".join(f"{key}={value}" for key, value in settings.items())


@contextlib.asynccontextmanager
async def opened(url: str, **settings: str) -> AsyncIterator[PostgresStore]:
    """A store on ``url``, the session and its queued run created."""
    store = PostgresStore(with_settings(url, deadlock_timeout="100ms", **settings))
    await store.open()
    try:
        await store.create_run(RUN, SESSION)
        yield store
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def other_connection(url: str) -> AsyncIterator[Any]:
    """Another client, in a transaction that takes row locks; rolled back at the end."""
    conn = await asyncpg.connect(url, server_settings={"deadlock_timeout": "10s"})
    try:
        tx = conn.transaction()
        await tx.start()
        try:
            yield conn
        finally:
            if not conn.is_closed():
                await tx.rollback()
    finally:
        await conn.close()


async def lock(conn: Any, table: str, column: str, key: str) -> None:
    await conn.execute(f"SELECT 1 FROM {table} WHERE {column} = $1 FOR UPDATE", key)


async def blocked_by(conn: Any) -> int:
    """The pid of the store's backend once it waits for a lock ``conn`` holds."""
    me, blocked = conn.get_server_pid(), []

    async def found() -> bool:
        query = "SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))"
        blocked[:] = [row[0] for row in await conn.fetch(query, me)]
        return bool(blocked)

    await wait_until(found)  # polled: PostgreSQL announces no lock wait
    (pid,) = blocked
    return int(pid)


async def deadlock_delete_session(store: PostgresStore, other: Any) -> asyncio.Task[Any]:
    """``delete_session`` locks the session's row then its runs' rows; ``other`` the
    run's row then the session's: PostgreSQL ends the store's transaction. Returns
    the deletion's task once ``other`` holds both rows."""
    await lock(other, "runs", "run_id", RUN.run_id)
    deletion = asyncio.create_task(store.delete_session(SESSION.session_id, T0 + 1))
    await blocked_by(other)
    await lock(other, "sessions", "session_id", SESSION.session_id)  # a cycle: the store's attempt ends
    return deletion


async def test_a_deadlocked_transaction_is_run_again_and_succeeds(postgres_url: str) -> None:
    async with opened(postgres_url) as store:
        async with other_connection(postgres_url) as other:
            deletion = await deadlock_delete_session(store, other)
            # other got the session's row: the store's first attempt was rolled back
            assert not deletion.done()  # its next attempt waits for other's locks
        cancelled = await asyncio.wait_for(deletion, 10)
        assert [c.run_id for c in cancelled] == [RUN.run_id]
        assert await store.unfinished_runs(SESSION.session_id) == []


async def test_a_deadlock_past_the_last_attempt_is_unavailable_and_wrote_nothing(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_connection, "CONFLICT_ATTEMPTS", 1)
    async with opened(postgres_url) as store:
        async with other_connection(postgres_url) as other:
            deletion = await deadlock_delete_session(store, other)
            with pytest.raises(StoreUnavailable, match="deadlock") as caught:
                await asyncio.wait_for(deletion, 10)
        assert caught.value.in_doubt is False
        assert caught.value.headers == {"Retry-After": "1"}
        assert [r.run_id for r in await store.unfinished_runs(SESSION.session_id)] == [RUN.run_id]
        assert [c.run_id for c in await store.delete_session(SESSION.session_id, T0 + 2)] == [RUN.run_id]


@pytest.mark.parametrize(
    ("setting", "sqlstate"),
    [("lock_timeout", "55P03"), ("statement_timeout", "57014")],
)
async def test_a_lock_held_past_a_timeout_is_unavailable_and_the_store_goes_on(
    postgres_url: str, setting: str, sqlstate: str
) -> None:
    async with opened(postgres_url, **{setting: "200ms"}) as store:
        async with other_connection(postgres_url) as other:
            await lock(other, "sessions", "session_id", SESSION.session_id)
            for write in (
                store.delete_session(SESSION.session_id, T0 + 1),  # a transaction
                store.touch_session(SESSION.session_id, T0 + 1),  # a single statement
            ):
                with pytest.raises(StoreUnavailable) as caught:
                    await write
                assert caught.value.in_doubt is False
                assert isinstance(caught.value.__cause__, asyncpg.PostgresError)
                assert caught.value.__cause__.sqlstate == sqlstate
        assert [c.run_id for c in await store.delete_session(SESSION.session_id, T0 + 2)] == [RUN.run_id]


async def test_a_connection_terminated_mid_statement_leaves_the_write_in_doubt(postgres_url: str) -> None:
    async with opened(postgres_url) as store:
        async with other_connection(postgres_url) as other:
            await lock(other, "sessions", "session_id", SESSION.session_id)
            touch = asyncio.create_task(store.touch_session(SESSION.session_id, T0 + 1))
            await other.execute("SELECT pg_terminate_backend($1)", await blocked_by(other))
            with pytest.raises(StoreUnavailable, match="lost the connection") as caught:
                await touch
        assert caught.value.in_doubt is True  # the UPDATE was sent: it may have run
        await store.touch_session(SESSION.session_id, T0 + 2)  # a new connection
        session = await store.get_session(SESSION.session_id)
        assert session is not None and session.last_activity == T0 + 2


async def test_a_connection_terminated_before_commit_wrote_nothing(postgres_url: str) -> None:
    async with opened(postgres_url) as store:
        async with other_connection(postgres_url) as other:
            await lock(other, "sessions", "session_id", SESSION.session_id)
            deletion = asyncio.create_task(store.delete_session(SESSION.session_id, T0 + 1))
            await other.execute("SELECT pg_terminate_backend($1)", await blocked_by(other))
            with pytest.raises(StoreUnavailable, match="lost the connection") as caught:
                await deletion
        assert caught.value.in_doubt is False  # no COMMIT was sent: PostgreSQL rolled it back
        assert [r.run_id for r in await store.unfinished_runs(SESSION.session_id)] == [RUN.run_id]


async def test_a_transaction_left_idle_for_a_lease_ends_so_that_its_locks_stop_no_recovery(postgres_url: str) -> None:
    """A worker stalled (paused, swapped out) between two statements of a
    transaction holds its run's row lock. PostgreSQL ends that transaction after
    a lease of idleness, so another worker's recovery of the run goes through,
    and the stalled worker, once awake, finds that it wrote nothing."""
    async with opened(postgres_url) as recovering:
        stalled = PostgresStore(postgres_url, lease_s=0.5)
        await stalled.open()
        locked, wake = asyncio.Event(), asyncio.Event()
        try:
            [_claimed] = await stalled.claim("w-stalled", 1, T0, T0 + 0.5, pipelines={"ticker"})

            async def lock_the_run_then_stall(conn: Any) -> None:
                await lock(conn, "runs", "run_id", RUN.run_id)
                locked.set()
                await wake.wait()
                await conn.execute("UPDATE runs SET status = 'succeeded' WHERE run_id = $1", RUN.run_id)

            stalled_write = asyncio.create_task(stalled._transact(lock_the_run_then_stall))
            await asyncio.wait_for(locked.wait(), 10)
            recovery = AppendGroup(
                RUN.run_id,
                [EventDraft(RUN.run_id, "status", b'{"status":"queued","attempt":2}', T0 + 1)],
                RunUpdate(RunStatus.QUEUED, expect=RUNNING, attempt=2, clear_lease=True, lease_expired_by=T0 + 1),
            )
            [recovered] = await asyncio.wait_for(recovering.append([recovery]), 10)
            assert isinstance(recovered, list), recovered  # its events: the update held
            wake.set()
            with pytest.raises(StoreUnavailable) as caught:
                await stalled_write
            assert caught.value.in_doubt is False
        finally:
            wake.set()  # without the limit, the recovery timed out: let the stalled write end
            await stalled.close()
        run = await recovering.get_run(RUN.run_id)
        assert run is not None and (run.status, run.attempt) == (RunStatus.QUEUED, 2)


async def test_no_connection_free_within_the_acquire_timeout_is_unavailable(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_connection, "ACQUIRE_TIMEOUT_S", 0.2)
    async with opened(with_settings(postgres_url, pool_min="1", pool_max="1")) as store:
        async with other_connection(postgres_url) as other:
            await lock(other, "sessions", "session_id", SESSION.session_id)
            holding = asyncio.create_task(store.touch_session(SESSION.session_id, T0 + 1))
            await blocked_by(other)  # the pool's one connection waits
            for call in (store.get_run(RUN.run_id), store.delete_session(SESSION.session_id, T0 + 1)):
                with pytest.raises(StoreUnavailable, match="came free") as caught:
                    await call
                assert caught.value.in_doubt is False
        await holding
        assert await store.get_run(RUN.run_id) is not None


@pytest.mark.parametrize(
    ("error", "sent", "in_doubt"),
    [
        # the errors a shared test server cannot be made to give safely
        (asyncpg.exceptions.TooManyConnectionsError("too many connections"), False, False),
        (asyncpg.exceptions.CannotConnectNowError("the database system is starting up"), False, False),
        (asyncpg.exceptions.SerializationError("could not serialize access"), True, False),
        (asyncpg.exceptions.AdminShutdownError("terminating connection"), True, True),
        (asyncpg.exceptions.AdminShutdownError("terminating connection"), False, False),
        (ConnectionResetError("reset by peer"), True, True),
    ],
)
def test_each_busy_or_down_error_is_unavailable_and_in_doubt_only_if_a_write_was_sent(
    error: Exception, sent: bool, in_doubt: bool
) -> None:
    mapped = _unavailable(error, "db", _Progress(connected=True, sent=sent))
    assert isinstance(mapped, StoreUnavailable)
    assert mapped.in_doubt is in_doubt
