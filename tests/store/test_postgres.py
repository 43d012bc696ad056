"""What only the PostgreSQL store promises: migrations safe under many processes
starting at once, appends from many processes to one run that stay gap-free,
byte-exact event data, durability, and long replays.

The contract suite runs on PostgreSQL too (``tests/conftest.py``); these tests add
what a single in-process backend cannot show. Each gets a database of its own.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from runyard.errors import ConfigurationError, QuotaExceeded, StoreError, StoreUnavailable
from runyard.models import EventDraft, Run, RunStatus, RunUpdate, Session
from runyard.store import AppendGroup, AppendResult, store_from_url
from runyard.store import postgres as postgres_package
from runyard.store.base import Admission, RunQuery
from runyard.store.postgres import MIGRATIONS, PostgresStore, pool_options
from runyard.store.postgres import runs as postgres_runs
from runyard.store.postgres.batches import WRITE_BATCH
from runyard.store.postgres.events import append_batch, append_locked
from runyard.store.postgres.pool import ARRAY_TYPES, server_settings
from runyard.store.postgres.runs import CUSTOM_PLANS
from runyard.store.postgres.schema import CLAIMABLE, LOCK_CLAIMABLE, LOCK_RUNS, VERSION_TABLE
from tests.services import require_service

T0 = 1_700_000_000.0
# the migrations before the one that drops the statistics on runs.status
STATUS_STATISTICS_DROPPED = MIGRATIONS.index("ALTER TABLE runs ALTER COLUMN status SET STATISTICS 0")
T = TypeVar("T")
needs_postgres = pytest.mark.postgres


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def make_run(run_id: str, session_id: str = "ses_1", **fields: Any) -> Run:
    fields.setdefault("input", {"count": 1})
    return Run(run_id, session_id, "alice", "ticker", RunStatus.QUEUED, created_at=T0, **fields)


def new_session(session_id: str) -> Session:
    return Session(session_id, "alice", T0, T0)


def drafts(run_id: str, start: int, n: int) -> list[EventDraft]:
    return [EventDraft(run_id, "tick", b'{"i":%d}' % i, T0 + i) for i in range(start, start + n)]


async def schema_versions(url: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        return [row[0] for row in await conn.fetch("SELECT version FROM runyard_schema_version ORDER BY version")]
    finally:
        await conn.close()


# -- configuration -------------------------------------------------------------


def test_both_schemes_pick_the_postgres_store() -> None:
    assert isinstance(store_from_url("postgresql://postgres@127.0.0.1/db"), PostgresStore)
    assert isinstance(store_from_url("postgres://postgres@127.0.0.1/db"), PostgresStore)


def test_pool_bounds_come_from_the_url_and_the_rest_goes_to_asyncpg() -> None:
    assert pool_options("postgresql://u@h:5433/db") == ("postgresql://u@h:5433/db", 1, 10)
    assert pool_options("postgresql://u@h/db?pool_min=2&sslmode=disable&pool_max=4") == (
        "postgresql://u@h/db?sslmode=disable",
        2,
        4,
    )
    for bad in ("pool_max=many", "pool_min=5&pool_max=2", "pool_max=0"):
        with pytest.raises(ConfigurationError, match="pool_m"):
            pool_options(f"postgresql://u@h/db?{bad}")


def test_sessions_end_a_transaction_idle_for_a_lease_unless_the_url_says_otherwise() -> None:
    always = {"application_name": "runyard", "plan_cache_mode": "force_custom_plan", "random_page_cost": "1.1"}
    assert server_settings("postgresql://u@h/db", 2.5) == {**always, "idle_in_transaction_session_timeout": "2500"}
    assert server_settings("postgresql://u@h/db", None) == always
    own = (
        "postgresql://u@h/db?application_name=mine&idle_in_transaction_session_timeout=0&plan_cache_mode=auto"
        "&random_page_cost=4"
    )
    assert server_settings(own, 2.5) == {}


async def test_unreachable_server_is_a_store_error_without_the_password() -> None:
    store = PostgresStore("postgresql://postgres:s3cret@127.0.0.1:1/runyard")
    with pytest.raises(StoreError, match="cannot connect") as caught:
        await store.open()
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("ci", ["true", ""])
def test_a_missing_service_skips_the_test_but_fails_it_in_ci(monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(expected, match="required in CI" if ci else "not reachable"):
        require_service("PostgreSQL", "127.0.0.1", 1)


# -- migrations ----------------------------------------------------------------


@needs_postgres
async def test_processes_opening_a_fresh_database_at_once_migrate_it_once(postgres_url: str) -> None:
    """Eight processes starting together: the advisory lock lets one migrate, the
    others find the schema in place; none fails on a table another just created."""
    stores = [PostgresStore(postgres_url) for _ in range(8)]
    try:
        await asyncio.gather(*(store.open() for store in stores))
        assert await asyncio.gather(*(store.migrate() for store in stores)) == [len(MIGRATIONS)] * 8
    finally:
        await asyncio.gather(*(store.close() for store in stores))
    assert await schema_versions(postgres_url) == list(range(1, len(MIGRATIONS) + 1))


@needs_postgres
async def test_migrations_are_recorded_and_idempotent(store: PostgresStore, postgres_url: str) -> None:
    assert await store.migrate() == len(MIGRATIONS)
    again = PostgresStore(postgres_url)
    await again.open()
    await again.close()
    assert await schema_versions(postgres_url) == list(range(1, len(MIGRATIONS) + 1))
    conn = await asyncpg.connect(postgres_url)
    try:
        tables = {row[0] for row in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    finally:
        await conn.close()
    assert tables == {
        "sessions",
        "messages",
        "runs",
        "events",
        "steps",
        "owner_quota",
        "idempotency_keys",
        "runyard_schema_version",
        "workers",
        "items",  # issue 13: the long-term store
        "crons",  # issue 13: crons
        "session_streams",
        "webhook_outbox",
    }


@needs_postgres
async def test_schema_newer_than_this_code_is_refused(store: PostgresStore, postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute("INSERT INTO runyard_schema_version (version) VALUES ($1)", len(MIGRATIONS) + 1)
    finally:
        await conn.close()
    newer = PostgresStore(postgres_url)
    with pytest.raises(StoreError, match="newer"):
        await newer.open()
    with pytest.raises(StoreError, match="not open"):  # it did not stay half-open
        await newer.ping()


# -- the queue's statistics ------------------------------------------------------

FILL_RUNS = """INSERT INTO runs (run_id, session_id, owner, pipeline, status, input, metadata, created_at,
    attempt, max_attempts, started_at, finished_at)
SELECT $1 || i, $1 || i, 'owner-' || (i % $3), 'ticker', $4, '{"count": 1}', '{}', $5 + i, 1, 1,
    CASE WHEN $4 = 'succeeded' THEN $5 END, CASE WHEN $4 = 'succeeded' THEN $5 + 1 END
FROM generate_series(1, $2) AS i"""


def rows_filtered_out(plan: Any) -> int:
    """The rows an executed plan read and threw away, over all its nodes."""
    own = int(plan.get("Rows Removed by Filter", 0)) * int(plan.get("Actual Loops", 1))
    return own + sum(rows_filtered_out(child) for child in plan.get("Plans", []))


@needs_postgres
async def test_a_claim_after_an_analyze_of_a_quiet_queue_reads_each_owner_s_runs_not_the_queue(
    store: PostgresStore, postgres_url: str
) -> None:
    """ANALYZE (autovacuum's) of a table with no queued run, then a burst of
    creations: the claim's plan must not trust the picture of an empty queue, which
    made it read the whole queue once per owner (8 s claims; ``schema.py``)."""
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(FILL_RUNS, "old_", 200, 32, "succeeded", T0)
        await conn.execute("VACUUM ANALYZE runs")
        await conn.execute(FILL_RUNS, "new_", 4000, 32, "queued", T0 + 1000)
        assert await conn.fetchval("SELECT count(*) FROM pg_stats WHERE tablename = 'runs' AND attname = 'status'") == 0
        async with conn.transaction():  # as the claim plans it
            await conn.execute(CUSTOM_PLANS)
            explained = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {CLAIMABLE}", 72, ["ticker"], T0 + 9999)
    finally:
        await conn.close()
    plan = json.loads(explained)[0]["Plan"]
    assert rows_filtered_out(plan) < 4000, "the claim read the whole queue for each owner"
    claimed = await store.claim("w1", 32, T0 + 9999, T0 + 10_030, pipelines=["ticker"])
    assert len(claimed) == 32 and len({claim.run.owner for claim in claimed}) == 32  # one per owner: fair


def rows_read(plan: Any, relation: str) -> int:
    """The rows an executed plan's scans of ``relation`` produced, over all its nodes."""
    own = int(plan["Actual Rows"]) * int(plan.get("Actual Loops", 1)) if plan.get("Relation Name") == relation else 0
    return own + sum(rows_read(child, relation) for child in plan.get("Plans", []))


@needs_postgres
async def test_a_claim_locks_its_candidates_by_key_however_long_the_queue(
    store: PostgresStore, postgres_url: str
) -> None:
    """As a claim plans it, the lock of its 24 candidates reads those 24 runs,
    not the 10,000 queued: planned for its candidates (every statement is,
    ``pool.server_settings``), it read the whole queue through a bitmap of
    ``runs_queued`` to join them, 8 ms a claim instead of 5 (``bench/claims.py``)."""
    conn = await asyncpg.connect(postgres_url, server_settings=server_settings(postgres_url, None))  # as the store's
    try:
        await conn.execute(FILL_RUNS, "queued_", 10_000, 20, "queued", T0)
        await conn.execute("VACUUM ANALYZE runs")
        candidates = [f"queued_{i}" for i in range(100, 124)]
        async with conn.transaction():  # as the claim plans it
            await conn.execute(CUSTOM_PLANS)
            explained = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {LOCK_CLAIMABLE}", candidates, 8)
    finally:
        await conn.close()
    assert rows_read(json.loads(explained)[0]["Plan"], "runs") <= len(candidates), "the lock read the queue"


@needs_postgres
async def test_a_batch_s_runs_are_locked_by_key_after_the_table_outgrew_its_first_plans(postgres_url: str) -> None:
    """A connection that wrote batches while ``runs`` held three rows (a new
    deployment) still locks the next batch's runs through the primary key once
    the table holds 20,000: the generic plan it settled on at first, a scan that
    compared every row with every id of the batch, lasted until the next
    ANALYZE (85 ms a batch at 16,000 runs; ``pool.server_settings``)."""
    store = PostgresStore(f"{postgres_url}?pool_max=1")  # one connection: the one whose plans are looked at
    await store.open()
    try:
        for i in range(3):
            await store.create_run(make_run(f"run_{i}", f"ses_{i}"))
        for batch in range(8):  # a statement gets its generic plan after five runs
            await store.append([AppendGroup(f"run_{i}", drafts(f"run_{i}", batch, 1)) for i in range(3)])
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(FILL_RUNS, "many_", 20_000, 32, "succeeded", T0)
        finally:
            await conn.close()
        async with store._pool.acquire() as own:
            name = await own.fetchval("SELECT name FROM pg_prepared_statements WHERE statement = $1", LOCK_RUNS)
            async with own.transaction():
                explained = await own.fetchval(
                    f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {name}(ARRAY['run_0', 'run_1', 'run_2'])"
                )
        after = await store.append([AppendGroup(f"run_{i}", drafts(f"run_{i}", 8, 1)) for i in range(3)])
    finally:
        await store.close()
    assert rows_filtered_out(json.loads(explained)[0]["Plan"]) == 0, "the lock read the whole table"
    assert [[event.seq for event in result] for result in after if isinstance(result, list)] == [[9], [9], [9]]


class ExplainedWrites:
    """The pool's connection, but each batch's write is first run as EXPLAIN
    ANALYZE in a savepoint rolled back, and its executed plan kept."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.plans: list[Any] = []

    async def fetch(self, query: str, *args: Any) -> Any:
        return await self._conn.fetch(query, *args)

    async def execute(self, query: str, *args: Any) -> Any:
        return await self._conn.execute(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        if query == WRITE_BATCH:
            await self._conn.execute("SAVEPOINT explained")
            explained = await self._conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {query}", *args)
            self.plans.append(json.loads(explained)[0]["Plan"])
            await self._conn.execute("ROLLBACK TO SAVEPOINT explained")
        return await self._conn.fetchval(query, *args)


@needs_postgres
async def test_a_batch_of_many_runs_updates_them_by_key_not_by_reading_the_table(postgres_url: str) -> None:
    """A batch that appends to 240 of 12,240 runs, then one that ends them,
    finds each run's row by its key: priced as if read from a disk, 240 index
    lookups lost to a hash of the whole table (12 ms a batch instead of 4;
    ``pool.server_settings``)."""
    live = [f"live_{i}" for i in range(1, 241)]
    end = RunUpdate(status=RunStatus.SUCCEEDED, expect=frozenset({RunStatus.RUNNING}), finished_at=T0 + 2)
    store = PostgresStore(f"{postgres_url}?pool_max=1")  # its sessions' settings are the point
    await store.open()
    try:
        async with store._pool.acquire() as own:
            await own.execute(FILL_RUNS, "done_", 12_000, 32, "succeeded", T0)
            await own.execute(FILL_RUNS, "live_", 240, 32, "running", T0)
            explaining = ExplainedWrites(own)
            for groups in (
                [AppendGroup(run_id, drafts(run_id, 0, 1)) for run_id in live],
                [AppendGroup(run_id, drafts(run_id, 1, 1), end) for run_id in live],
            ):
                async with own.transaction():
                    results = await append_batch(explaining, groups)
                assert all(isinstance(result, list) for result in results)
            written = await own.fetchrow(
                "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM runs WHERE status = 'succeeded')"
            )
    finally:
        await store.close()
    assert [rows_read(plan, "runs") for plan in explaining.plans] == [240, 240], "a batch read the whole table"
    assert tuple(written) == (480, 12_240)


@needs_postgres
async def test_statistics_on_run_status_taken_before_the_migration_are_dropped(postgres_url: str) -> None:
    """A deployment migrated from an earlier schema has status statistics ANALYZE
    took then: the migration drops them, and no later ANALYZE takes them again."""
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(VERSION_TABLE)
        async with conn.transaction():
            for statement in MIGRATIONS[:STATUS_STATISTICS_DROPPED]:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO runyard_schema_version (version) SELECT generate_series(1, $1::int)",
                STATUS_STATISTICS_DROPPED,
            )
        await conn.execute(FILL_RUNS, "old_", 200, 4, "succeeded", T0)
        await conn.execute("ANALYZE runs")
        status_stats = "SELECT count(*) FROM pg_stats WHERE tablename = 'runs' AND attname = 'status'"
        assert await conn.fetchval(status_stats) == 1
        store = PostgresStore(postgres_url)
        await store.open()  # migrates the rest
        await store.close()
        assert await conn.fetchval(status_stats) == 0
        await conn.execute("ANALYZE runs")
        assert await conn.fetchval(status_stats) == 0
        assert await conn.fetchval("SELECT count(*) FROM runs WHERE status = 'succeeded'") == 200
    finally:
        await conn.close()


# -- appends -------------------------------------------------------------------


@needs_postgres
async def test_processes_appending_to_one_run_at_once_never_share_or_skip_a_seq(postgres_url: str) -> None:
    """Four pools (as four processes would have) append concurrently to one shared
    run, each batch also touching a run of its own listed before or after it: the
    row lock numbers them 1..N, and sorted locking keeps the batches from deadlocking."""
    stores = [PostgresStore(f"{postgres_url}?pool_max=4") for _ in range(4)]
    await asyncio.gather(*(store.open() for store in stores))
    try:
        await stores[0].create_run(make_run("run_shared"))
        for i, store in enumerate(stores):
            await store.create_run(make_run(f"run_own{i}"))

        async def writer(i: int, n: int) -> list[AppendResult]:
            own = f"run_own{i % 4}"
            groups = [AppendGroup("run_shared", drafts("run_shared", 0, n)), AppendGroup(own, drafts(own, 0, 1))]
            return await stores[i % 4].append(groups if i % 2 else groups[::-1])

        sizes = [1 + i % 5 for i in range(200)]
        batches = await asyncio.gather(*(writer(i, n) for i, n in enumerate(sizes)))
        handed_out = []
        for i, results in enumerate(batches):
            mine = results[0] if i % 2 else results[1]
            assert isinstance(mine, list)
            seqs = [e.seq for e in mine]
            assert seqs == list(range(seqs[0], seqs[0] + sizes[i]))  # a group's events are consecutive
            handed_out += seqs
        total = sum(sizes)
        assert sorted(handed_out) == list(range(1, total + 1))
        stored = await stores[1].read_events("run_shared", 0, 10_000)
        assert [e.seq for e in stored] == list(range(1, total + 1))
        shared = await stores[2].get_run("run_shared")
        assert shared is not None
        assert shared.last_seq == total
        for i in range(4):
            assert [e.seq for e in await stores[3].read_events(f"run_own{i}", 0, 100)] == list(range(1, 51))
    finally:
        await asyncio.gather(*(store.close() for store in stores))


# -- creations ----------------------------------------------------------------


@needs_postgres
async def test_creations_made_at_once_are_written_together_and_each_answered_alone(store: PostgresStore) -> None:
    """Concurrent creations share a transaction (group commit); one that PostgreSQL
    refuses (a run id already taken) fails alone, and the others are created."""
    await store.create_run(make_run("run_taken", "ses_taken"))
    ids = [f"run_{i}" for i in range(30)]
    ids[17] = "run_taken"
    outcomes = await asyncio.gather(
        *(
            store.create_run(make_run(run_id, f"ses_new{i}"), new_session(f"ses_new{i}"))
            for i, run_id in enumerate(ids)
        ),
        return_exceptions=True,
    )
    assert isinstance(outcomes[17], asyncpg.UniqueViolationError)
    assert all(isinstance(outcome, Run) for i, outcome in enumerate(outcomes) if i != 17)
    for i, run_id in enumerate(ids):
        stored = await store.get_run(run_id)
        assert stored is not None
        assert stored.session_id == ("ses_taken" if i == 17 else f"ses_new{i}")
        # the refused creation left no session behind: never half-created
        assert (await store.get_session(f"ses_new{i}") is None) == (i == 17)


@needs_postgres
async def test_creations_made_at_once_without_quotas_are_one_statement(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No quota to count: the group's sessions and runs go in one statement, a
    transaction by itself (no BEGIN, no COMMIT), in the order they were asked for."""
    sent: list[str] = []
    for method in ("execute", "fetch", "fetchval", "fetchrow", "executemany"):
        monkeypatch.setattr(asyncpg.Connection, method, _recording(getattr(asyncpg.Connection, method), sent))
    runs = [make_run(f"run_{i}", f"ses_{i}", metadata={"i": i}) for i in range(19)]
    await asyncio.gather(*(store.create_run(run, new_session(run.session_id)) for run in runs))
    monkeypatch.undo()
    assert [sql.split()[0] for sql in sent] == ["WITH"]
    await store.create_run(make_run("run_19", "ses_1"))  # a group with no new session
    listed = await store.list_runs(RunQuery(owner="alice", limit=50))
    assert [run.run_id for run in listed] == [f"run_{i}" for i in reversed(range(20))]  # newest first
    assert (listed[5].metadata, listed[5].input, listed[5].status) == ({"i": 14}, {"count": 1}, RunStatus.QUEUED)
    assert [await store.get_session(f"ses_{i}") is not None for i in range(19)] == [True] * 19


@needs_postgres
async def test_runs_read_at_once_are_one_statement_and_each_reader_gets_its_own(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent reads of runs (streams opening) are one statement, not one each
    (``reads.py``); a run not there reads as None, and a read asked after a write
    sees it."""
    for i in range(5):
        await store.create_run(make_run(f"run_{i}", f"ses_{i}", metadata={"i": i}), new_session(f"ses_{i}"))
    sent: list[str] = []
    monkeypatch.setattr(asyncpg.Connection, "fetch", _recording(asyncpg.Connection.fetch, sent))
    asked = ["run_3", "run_0", "run_gone", "run_4", "run_3"]
    read = await asyncio.gather(*(store.get_run(run_id) for run_id in asked))
    monkeypatch.undo()
    assert len(sent) == 1
    assert [None if run is None else (run.run_id, run.metadata) for run in read] == [
        ("run_3", {"i": 3}),
        ("run_0", {"i": 0}),
        None,
        ("run_4", {"i": 4}),
        ("run_3", {"i": 3}),
    ]
    start = RunUpdate(status=RunStatus.RUNNING, expect=frozenset({RunStatus.QUEUED}), started_at=T0)
    await store.append([AppendGroup("run_1", drafts("run_1", 0, 2), update=start)])
    run_1 = await store.get_run("run_1")
    assert run_1 is not None and (run_1.status, run_1.last_seq) == (RunStatus.RUNNING, 2)


@needs_postgres
async def test_pages_of_events_read_at_once_are_one_statement_and_each_is_its_own_page(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streams reading their runs' history at once are one statement; each page
    keeps its own run, cursor and limit."""
    for i in range(3):
        await store.create_run(make_run(f"run_{i}", f"ses_{i}"), new_session(f"ses_{i}"))
        await store.append([AppendGroup(f"run_{i}", drafts(f"run_{i}", 0, 5 + i))])
    sent: list[str] = []
    monkeypatch.setattr(asyncpg.Connection, "fetch", _recording(asyncpg.Connection.fetch, sent))
    asked = [("run_0", 0, 2), ("run_1", 3, 10), ("run_gone", 0, 10), ("run_2", 7, 10), ("run_0", 4, 0), ("run_2", 0, 3)]
    pages = await asyncio.gather(*(store.read_events(*page) for page in asked))
    monkeypatch.undo()
    assert len(sent) == 1
    assert [[(event.run_id, event.seq) for event in page] for page in pages] == [
        [("run_0", 1), ("run_0", 2)],
        [("run_1", 4), ("run_1", 5), ("run_1", 6)],
        [],
        [],
        [],
        [("run_2", 1), ("run_2", 2), ("run_2", 3)],
    ]
    assert pages[1][0].data == b'{"i":3}'


@needs_postgres
async def test_groups_of_two_processes_admit_exactly_each_owners_quota(postgres_url: str) -> None:
    """Two pools (two processes) group creations of three owners under a quota of
    7, the owners in opposite orders: each owner gets exactly 7 runs, the rest
    ``QuotaExceeded`` with nothing written, and no group waits on the other's locks."""
    stores = [PostgresStore(postgres_url) for _ in range(2)]
    await asyncio.gather(*(store.open() for store in stores))
    owners = ["alice", "bob", "carol"]
    try:

        async def create(i: int) -> Run:
            store = stores[i % 2]
            owner = owners[i % 3] if i % 2 else owners[-1 - i % 3]
            r = Run(f"run_q{i}", f"ses_q{i}", owner, "ticker", RunStatus.QUEUED, created_at=T0, input={"count": 1})
            return await store.create_run(r, Session(r.session_id, owner, T0, T0), Admission(quota=7))

        outcomes = await asyncio.wait_for(asyncio.gather(*(create(i) for i in range(90)), return_exceptions=True), 20)
        admitted = [outcome for outcome in outcomes if isinstance(outcome, Run)]
        assert all(isinstance(outcome, Run | QuotaExceeded) for outcome in outcomes)
        assert sorted(run.owner for run in admitted) == sorted(owners * 7)
        for i, outcome in enumerate(outcomes):
            assert (await stores[0].get_session(f"ses_q{i}") is not None) == isinstance(outcome, Run)
    finally:
        await asyncio.gather(*(store.close() for store in stores))


@needs_postgres
async def test_a_cancelled_creation_still_commits_whole(store: PostgresStore) -> None:
    creations = [asyncio.create_task(store.create_run(make_run(f"run_c{i}", f"ses_c{i}"), new_session(f"ses_c{i}")))
                 for i in range(5)]  # fmt: skip
    await asyncio.sleep(0)
    creations[2].cancel()
    await asyncio.gather(*creations, return_exceptions=True)
    for i in range(5):
        assert await store.get_run(f"run_c{i}") is not None
        assert await store.get_session(f"ses_c{i}") is not None


@needs_postgres
async def test_event_data_and_json_values_round_trip_byte_exact(store: PostgresStore) -> None:
    """Event data is bytea, never re-serialised; JSON values keep a NUL that jsonb would refuse."""
    payloads = [
        b'{"b": 1,   "a": [1, 2], "b": 2}',  # whitespace, key order, duplicate keys
        b'{"x":1.000000000000000000001,"y":1e400}',  # numbers beyond float precision
        b'"\\u0000 and \\ud83c\\udf0d escaped"',
        '{"raw":"Grüße \u0000 🌍"}'.encode(),
        bytes(range(256)),  # not even UTF-8
        b"",
        b"x" * 1_000_000,
    ]
    await store.create_run(make_run("run_1", input={"text": "nul \u0000 here"}, metadata={"k": "\u0000"}))
    await store.append([AppendGroup("run_1", [EventDraft("run_1", "blob", p, T0) for p in payloads])])
    read = await store.read_events("run_1", 0, 100)
    assert [e.data for e in read] == payloads
    assert all(type(e.data) is bytes for e in read)
    found = await store.get_run("run_1")
    assert found is not None
    assert (found.input, found.metadata) == ({"text": "nul \u0000 here"}, {"k": "\u0000"})


@needs_postgres
async def test_cancelled_append_still_commits_whole(store: PostgresStore) -> None:
    """A caller cancelled mid-append stops waiting; its transaction runs to the end."""
    await store.create_run(make_run("run_1"))
    task = asyncio.create_task(store.append([AppendGroup("run_1", drafts("run_1", 0, 20_000))]))
    await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The transaction goes on without its caller; it may not even hold the run's
    # row yet (a loaded machine), so wait for it to commit, whole, before the next append.
    deadline = asyncio.get_running_loop().time() + 30
    while (seen := len(await store.read_events("run_1", 0, 30_000))) == 0:
        assert asyncio.get_running_loop().time() < deadline, "the cancelled append never committed"
        await asyncio.sleep(0.02)
    assert seen == 20_000  # never a part of it
    (after,) = await store.append([AppendGroup("run_1", drafts("run_1", 0, 1))])
    assert isinstance(after, list)
    assert after[0].seq == 20_001
    assert [e.seq for e in await store.read_events("run_1", 0, 30_000)] == list(range(1, 20_002))


@needs_postgres
async def test_an_append_batch_is_four_round_trips_however_many_runs_it_writes(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BEGIN, the runs' lock, one statement for every write, COMMIT: events of
    several runs in several sessions, a run's status change and another's events
    alone all go in the one write, each still numbered as if alone."""
    for i in range(4):
        await store.create_run(make_run(f"run_{i}", f"ses_{i % 2}"))
    sent: list[str] = []
    for method in ("execute", "fetch", "fetchval", "fetchrow", "executemany"):
        monkeypatch.setattr(asyncpg.Connection, method, _recording(getattr(asyncpg.Connection, method), sent))
    start = RunUpdate(status=RunStatus.RUNNING, expect=frozenset({RunStatus.QUEUED}), started_at=T0)
    results = await store.append(
        [
            AppendGroup("run_0", drafts("run_0", 0, 3)),
            AppendGroup("run_1", drafts("run_1", 0, 2), update=start),
            AppendGroup("run_2", drafts("run_2", 0, 1)),
            AppendGroup("run_3", [], update=start),
        ]
    )
    monkeypatch.undo()
    assert [sql.split()[0].rstrip(";") for sql in sent] == ["BEGIN", "SELECT", "WITH", "COMMIT"]
    assert [[e.seq for e in result] for result in results if isinstance(result, list)] == [[1, 2, 3], [1, 2], [1], []]
    assert [(r.status, r.last_seq) for r in [await store.get_run(f"run_{i}") for i in range(4)] if r] == [
        (RunStatus.QUEUED, 3),
        (RunStatus.RUNNING, 2),
        (RunStatus.QUEUED, 1),
        (RunStatus.RUNNING, 0),
    ]
    # each session's stream numbers its events in the batch's order: ses_0 has run_0's and run_2's
    ses_0 = await store.read_session_events("alice", "ses_0", 0, 10)
    assert [(e.cursor, e.event.run_id, e.event.seq) for e in ses_0] == [
        (1, "run_0", 1),
        (2, "run_0", 2),
        (3, "run_0", 3),
        (4, "run_2", 1),
    ]
    ses_1 = await store.read_session_events("alice", "ses_1", 0, 10)
    assert [(e.cursor, e.event.run_id, e.event.seq) for e in ses_1] == [(1, "run_1", 1), (2, "run_1", 2)]


@needs_postgres
async def test_a_claim_locks_only_the_runs_it_takes(
    store: PostgresStore, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker's claim, made while the first is still under way, takes
    the runs the first leaves: it used to find every candidate the first had
    read (twice what it claims) locked until its commit, take none, and wait for
    the next wake-up while the first worker took them all (a flaky fleet spec)."""
    for i in range(5):
        await store.create_run(make_run(f"run_{i}", f"ses_{i}"))
    locked, go_on = asyncio.Event(), asyncio.Event()

    async def paused_after_the_lock(*args: Any) -> list[AppendResult]:
        locked.set()
        await go_on.wait()
        return await append_locked(*args)

    monkeypatch.setattr(postgres_runs, "append_locked", paused_after_the_lock)
    first = asyncio.create_task(store.claim("w1", 2, T0, T0 + 30, pipelines=["ticker"]))
    await asyncio.wait_for(locked.wait(), 10)
    monkeypatch.undo()
    other = PostgresStore(postgres_url)  # another worker process: a pool of its own
    await other.open()
    try:
        second = await asyncio.wait_for(other.claim("w2", 5, T0, T0 + 30, pipelines=["ticker"]), 10)
    finally:
        go_on.set()
        await other.close()
    taken_first = {claim.run.run_id for claim in await first}
    assert taken_first == {"run_0", "run_1"}  # the oldest, in turn order
    assert {claim.run.run_id for claim in second} == {"run_2", "run_3", "run_4"}


@needs_postgres
async def test_a_claim_writes_its_runs_without_locking_them_twice(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim's lock (which chose the runs) is the one its numbering writes under:
    BEGIN, the claim's plan settings, a look for new owners' first runs (one owner
    here: they cannot fill a claim of 2), the candidates, their lock, the write, COMMIT."""
    for i in range(3):
        await store.create_run(make_run(f"run_{i}", f"ses_{i}"))
    sent: list[str] = []
    for method in ("execute", "fetch", "fetchval", "fetchrow", "executemany"):
        monkeypatch.setattr(asyncpg.Connection, method, _recording(getattr(asyncpg.Connection, method), sent))
    claimed = await store.claim("w1", 2, T0, T0 + 30, pipelines=["ticker"])
    monkeypatch.undo()
    assert [sql.split()[0].rstrip(";") for sql in sent] == [
        "BEGIN",
        "SELECT",
        "SELECT",
        "WITH",
        "SELECT",
        "WITH",
        "COMMIT",
    ]
    assert sent[1] == CUSTOM_PLANS
    assert [(c.run.run_id, c.run.status, c.event.seq) for c in claimed] == [
        ("run_0", RunStatus.RUNNING, 1),
        ("run_1", RunStatus.RUNNING, 1),
    ]
    stored = await store.get_run("run_1")
    assert stored is not None and (stored.status, stored.worker_id, stored.last_seq) == (RunStatus.RUNNING, "w1", 1)
    assert [e.seq for e in await store.read_events("run_1", 0, 10)] == [1]


def _recording(method: Callable[..., Awaitable[Any]], sent: list[str]) -> Callable[..., Awaitable[Any]]:
    async def recorded(conn: asyncpg.Connection, query: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(query.strip())
        return await method(conn, query, *args, **kwargs)

    return recorded


class CutOffAtCommit(PostgresStore):
    """Loses the connection during the next COMMIT, after (``committed``) or
    before the server made the transaction durable."""

    cut: bool | None = None  # None: no cut; else whether the commit happened

    async def _transact(self, work: Callable[[Any], Awaitable[T]]) -> T:
        committed, self.cut = self.cut, None
        if committed is None:
            return await super()._transact(work)
        if committed:
            await super()._transact(work)
        else:
            async with self._live().acquire() as conn:
                transaction = conn.transaction()
                await transaction.start()
                await work(conn)
                await transaction.rollback()
        raise StoreUnavailable("the connection was lost during COMMIT", in_doubt=True)


@pytest.fixture
async def cut_store(postgres_url: str) -> AsyncIterator[CutOffAtCommit]:
    store = CutOffAtCommit(postgres_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_an_append_cut_off_after_its_commit_stands_and_is_never_repeated(cut_store: CutOffAtCommit) -> None:
    await cut_store.create_run(make_run("run_1"))
    cut_store.cut = True
    (result,) = await cut_store.append([AppendGroup("run_1", drafts("run_1", 0, 3))])
    assert isinstance(result, list) and [e.seq for e in result] == [1, 2, 3]
    assert [e.seq for e in await cut_store.read_events("run_1", 0, 10)] == [1, 2, 3]


async def test_an_append_cut_off_before_its_commit_is_reported_as_not_written(cut_store: CutOffAtCommit) -> None:
    await cut_store.create_run(make_run("run_1"))
    cut_store.cut = False
    with pytest.raises(StoreUnavailable) as raised:
        await cut_store.append([AppendGroup("run_1", drafts("run_1", 0, 3))])
    assert raised.value.in_doubt is False  # so the event log writes the same batch again
    (result,) = await cut_store.append([AppendGroup("run_1", drafts("run_1", 0, 3))])
    assert isinstance(result, list) and [e.seq for e in result] == [1, 2, 3]


async def test_a_claim_cut_off_after_its_commit_still_hands_over_its_runs(cut_store: CutOffAtCommit) -> None:
    await cut_store.create_run(make_run("run_1"))
    cut_store.cut = True
    (claimed,) = await cut_store.claim("w1", 5, T0, T0 + 30, pipelines=["ticker"])
    assert (claimed.run.run_id, claimed.run.worker_id) == ("run_1", "w1")


# -- sessions touched in groups ------------------------------------------------


async def test_touches_at_once_are_written_in_groups_each_session_its_latest(store: PostgresStore) -> None:
    """Touches handed over together (runs ending in one batch) share statements, and
    each session keeps the latest of its own, whatever their order."""
    ids = [f"ses_touch{i}" for i in range(5)]
    for session_id in ids:
        await store.create_session(new_session(session_id))
    calls: list[int] = []
    write = store._touches._execute

    async def counted(session_ids: list[str], ats: list[float]) -> None:
        calls.append(len(session_ids))
        await write(session_ids, ats)

    store._touches._execute = counted
    touches = [(ids[k % 5], T0 + (k * 7) % 50) for k in range(50)]
    await asyncio.gather(*(store.touch_session(session_id, at) for session_id, at in touches))
    assert len(calls) < len(touches)  # grouped: one statement wrote several touches
    for session_id in ids:
        latest = max(at for s, at in touches if s == session_id)
        found = await store.get_session(session_id)
        assert found is not None and found.last_activity == latest


@needs_postgres
async def test_a_connection_learns_every_array_type_when_it_opens_not_inside_a_write(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[set[int]] = []
    ask = asyncpg.Connection._introspect_types

    async def counted(conn: asyncpg.Connection, typeoids: set[int], *rest: Any) -> Any:
        asked.append(set(typeoids))
        return await ask(conn, typeoids, *rest)

    monkeypatch.setattr(asyncpg.Connection, "_introspect_types", counted)
    store = PostgresStore(postgres_url + "?pool_min=1&pool_max=1")
    await store.open()
    try:
        await store.create_run(make_run("run_1"), new_session("ses_1"))
        await store.append([AppendGroup("run_1", drafts("run_1", 0, 2))])
        assert [c.run_id for c in await store.delete_session("ses_1", T0 + 1)] == ["run_1"]
    finally:
        await store.close()
    assert len(asked) == 1  # the pool's one connection, as it opened


def test_every_array_type_a_statement_casts_to_is_learned_when_a_connection_opens() -> None:
    sources = Path(postgres_package.__file__).parent.glob("*.py")
    cast_to = {cast for source in sources for cast in re.findall(r"::(\w+\[\])", source.read_text())}
    assert cast_to - {"text[]"} <= set(ARRAY_TYPES)  # text[] has a codec built in
