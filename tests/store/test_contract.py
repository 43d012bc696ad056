"""The store contract: every backend behaves exactly like this (see ``runyard.store.base``),
one section per protocol of ``base.py`` (Lifecycle, SessionStore, Admissions,
RunRecords, RunQueue, EventStore, Retention).

Runs once per URL in ``tests/conftest.py::STORE_URLS``; a new backend joins by
adding its URL there.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import pytest

from runyard.errors import IdempotencyKeyReused, QuotaExceeded, SessionBusy, SessionNotFound, StoreError
from runyard.models import (
    Event,
    EventDraft,
    Fence,
    LeaseLost,
    Message,
    Multitask,
    Run,
    RunError,
    RunStatus,
    RunUpdate,
    Session,
    StatusConflict,
)
from runyard.outcome import Outcome
from runyard.store import AppendGroup, AppendResult, Store, store_from_url
from runyard.store.base import WORKER_FORGOTTEN_S, Admission, Cancelled, LeaseRenewal, RunQuery, SessionEntry

T0 = 1_700_000_000.0
SERVED = ["ticker"]  # the pipelines the claiming workers serve
_ids = itertools.count(1)


def session(owner: str = "alice", *, at: float = T0, **fields: Any) -> Session:
    return Session(f"ses_{next(_ids)}", owner, created_at=at, last_activity=at, **fields)


def run(
    session_id: str = "ses_0",
    owner: str = "alice",
    *,
    status: RunStatus = RunStatus.QUEUED,
    at: float = T0,
    **fields: Any,
) -> Run:
    fields.setdefault("input", {"count": 3})
    fields.setdefault("pipeline", "ticker")
    return Run(
        run_id=f"run_{next(_ids)}",
        session_id=session_id,
        owner=owner,
        status=status,
        created_at=at,
        **fields,
    )


def drafts(run_id: str, n: int, type: str = "tick") -> list[EventDraft]:
    return [EventDraft(run_id, type, b'{"i":%d}' % i, T0 + i) for i in range(n)]


def events(result: AppendResult) -> list[Event]:
    assert isinstance(result, list), result
    return result


async def created(store: Store, *runs: Run) -> list[Run]:
    for r in runs:
        await store.create_run(r)
    return list(runs)


async def all_events(store: Store, run_id: str) -> list[Event]:
    return await store.read_events(run_id, 0, 1_000_000)


# session entry (``Admissions``) and deletion (``SessionStore``)
ENQUEUE = SessionEntry(Multitask.ENQUEUE, expired_before=T0 - 3600)
REJECT = SessionEntry(Multitask.REJECT, expired_before=T0 - 3600)
INTERRUPT = SessionEntry(Multitask.INTERRUPT, expired_before=T0 - 3600)


async def busy_session(store: Store) -> tuple[Session, Run, Run]:
    """A session of alice's with a running run (held by w1) and a queued one behind it."""
    s = session()
    await store.create_session(s)
    first, second = await created(store, run(s.session_id, max_attempts=2), run(s.session_id))
    (claim,) = await store.claim("w1", 1, T0, T0 + 30, pipelines=SERVED)
    assert claim.run.run_id == first.run_id
    return s, first, second


def assert_cancelled_by_the_store(cancelled: Cancelled, run_id: str, was_running: bool) -> None:
    assert (cancelled.run_id, cancelled.was_running, cancelled.pipeline) == (run_id, was_running, "ticker")
    # the same events a cancellation through the engine writes
    assert [(e.type, json.loads(e.data)) for e in cancelled.events] == Outcome.cancelled().events()


async def assert_ended_cancelled(store: Store, run_id: str) -> None:
    ended = await store.get_run(run_id)
    assert ended is not None
    assert (ended.status, ended.worker_id, ended.lease_expires_at) == (RunStatus.CANCELLED, None, None)
    assert ended.error == RunError("cancelled", "the run was cancelled") and ended.finished_at is not None
    assert [e.type for e in await all_events(store, run_id)][-2:] == ["status", "end"]


# -- Lifecycle: open, close, ping, migrate -----------------------------------------


async def test_ping_answers_when_open(store: Store) -> None:
    await store.ping()


async def test_migrate_is_repeatable_and_reports_the_version(store: Store) -> None:
    version = await store.migrate()
    assert version >= 1
    assert await store.migrate() == version


async def test_everything_survives_close_and_reopen(store_url: str) -> None:
    if store_url.startswith("memory:"):
        pytest.skip("memory:// keeps nothing once closed, by design")
    first = store_from_url(store_url)
    await first.open()
    owner_session = session(metadata={"k": "v"})
    stored = run(owner_session.session_id)
    await first.create_run(stored, new_session=owner_session)
    await first.append_message(owner_session.session_id, Message("user", "hallo", T0), keep=10)
    for _ in range(5):
        await first.append([AppendGroup(stored.run_id, drafts(stored.run_id, 100))])
    finish = RunUpdate(status=RunStatus.SUCCEEDED, output={"n": 500}, set_output=True, finished_at=T0 + 1)
    await first.append([AppendGroup(stored.run_id, drafts(stored.run_id, 1), finish)])
    run_before = await first.get_run(stored.run_id)
    await first.close()
    with pytest.raises(StoreError, match="not open"):
        await first.get_run(stored.run_id)

    second = store_from_url(store_url)
    await second.open()
    try:
        assert await second.get_run(stored.run_id) == run_before
        assert await second.get_session(owner_session.session_id) == owner_session
        assert [m.content for m in await second.history(owner_session.session_id)] == ["hallo"]
        replay = await second.read_events(stored.run_id, 0, 1000)
        assert [e.seq for e in replay] == list(range(1, 502))
        assert replay[42].data == b'{"i":42}'
        (more,) = await second.append([AppendGroup(stored.run_id, drafts(stored.run_id, 1))])
        assert events(more)[0].seq == 502
    finally:
        await second.close()


# -- SessionStore: sessions, their memory and their unfinished runs -----------------


async def test_created_session_reads_back_equal(store: Store) -> None:
    s = session(metadata={"plan": "free", "tags": ["a", "ü"]})
    await store.create_session(s)
    assert await store.get_session(s.session_id) == s


async def test_unknown_session_is_none(store: Store) -> None:
    assert await store.get_session("ses_missing") is None


async def test_touch_session_only_moves_last_activity_forward(store: Store) -> None:
    s = session()
    await store.create_session(s)
    await store.touch_session(s.session_id, T0 + 10)
    await store.touch_session(s.session_id, T0 + 5)
    found = await store.get_session(s.session_id)
    assert found is not None
    assert found.last_activity == T0 + 10
    assert found.created_at == T0


async def test_touch_unknown_session_does_nothing(store: Store) -> None:
    await store.touch_session("ses_missing", T0)
    assert await store.get_session("ses_missing") is None


async def test_history_is_oldest_first_and_round_trips_messages(store: Store) -> None:
    s = session()
    await store.create_session(s)
    sent = [
        Message("user", "Grüß dich 👋 — ¿qué tal?", T0),
        Message("assistant", {"parts": [{"text": "日本語"}], "n": 1.5}, T0 + 1, extra={"model": "m"}),
        Message("tool", None, T0 + 2),
    ]
    for m in sent:
        await store.append_message(s.session_id, m, keep=10)
    assert await store.history(s.session_id) == sent


async def test_history_of_unknown_session_is_empty(store: Store) -> None:
    assert await store.history("ses_missing") == []


async def test_memory_keeps_only_newest_n(store: Store) -> None:
    s = session()
    await store.create_session(s)
    for i in range(7):
        await store.append_message(s.session_id, Message("user", f"m{i}", T0 + i), keep=3)
    assert [m.content for m in await store.history(s.session_id)] == ["m4", "m5", "m6"]


async def test_memories_of_sessions_are_apart(store: Store) -> None:
    a, b = session(), session("bob")
    for s in (a, b):
        await store.create_session(s)
        await store.append_message(s.session_id, Message("user", s.owner, T0), keep=5)
    assert [m.content for m in await store.history(a.session_id)] == ["alice"]
    assert [m.content for m in await store.history(b.session_id)] == ["bob"]


async def test_delete_session_forgets_memory_keeps_runs(store: Store) -> None:
    s = session()
    await store.create_session(s)
    await store.append_message(s.session_id, Message("user", "hi", T0), keep=5)
    (r,) = await created(store, run(s.session_id, status=RunStatus.SUCCEEDED))
    assert await store.delete_session(s.session_id, T0 + 1) == []
    deleted = await store.get_session(s.session_id)
    assert deleted is not None
    assert deleted.deleted
    assert await store.history(s.session_id) == []
    assert await store.get_run(r.run_id) == r


async def test_unfinished_runs_of_a_session_oldest_first(store: Store) -> None:
    first, _done, _elsewhere, second = await created(
        store,
        run("ses_x", status=RunStatus.RUNNING),
        run("ses_x", status=RunStatus.CANCELLED),
        run("ses_y"),
        run("ses_x"),
    )
    assert [r.run_id for r in await store.unfinished_runs("ses_x")] == [first.run_id, second.run_id]
    assert await store.unfinished_runs("ses_missing") == []


async def test_delete_session_cancels_its_unfinished_runs_in_the_same_transaction(store: Store) -> None:
    s, running, queued = await busy_session(store)
    cancelled = await store.delete_session(s.session_id, T0 + 5)
    assert [(c.run_id, c.was_running) for c in cancelled] == [(running.run_id, True), (queued.run_id, False)]
    for c in cancelled:
        assert_cancelled_by_the_store(c, c.run_id, c.was_running)
        await assert_ended_cancelled(store, c.run_id)
    assert await store.unfinished_runs(s.session_id) == []
    assert await store.delete_session(s.session_id, T0 + 6) == []  # twice is harmless


async def test_a_deletion_racing_entries_leaves_no_unfinished_run_in_the_session(store: Store) -> None:
    """Regression: DELETE answered 204 while a run created at the same moment went
    on running in the deleted session."""
    s = session()
    await store.create_session(s)
    entries = [store.enter_session(run(s.session_id), ENQUEUE) for _ in range(5)]
    outcomes = await asyncio.gather(
        *entries[:3], store.delete_session(s.session_id, T0), *entries[3:], return_exceptions=True
    )
    assert not any(isinstance(o, BaseException) and not isinstance(o, SessionNotFound) for o in outcomes)
    assert await store.unfinished_runs(s.session_id) == []


# -- Admissions: quotas, idempotency keys, session entry and multitask (issue 10) ----


async def test_create_run_with_new_session_writes_both(store: Store) -> None:
    s = session()
    r = run(s.session_id)
    await store.create_run(r, new_session=s)
    assert await store.get_session(s.session_id) == s
    assert await store.get_run(r.run_id) == r


async def test_a_quota_admits_exactly_n_runs_of_an_owner_even_when_creations_race(store: Store) -> None:
    quota = Admission(quota=5)

    async def attempt(r: Run) -> bool:
        try:
            await store.create_run(r, session(), quota)
        except QuotaExceeded:
            return False
        return True

    admitted = await asyncio.gather(*(attempt(run(f"ses_q{i}", "frugal")) for i in range(20)))
    assert sum(admitted) == 5
    assert len(await store.list_runs(RunQuery("frugal", limit=100))) == 5
    await store.create_run(run("ses_x", "other"), session(), quota)  # quotas are per owner
    with pytest.raises(QuotaExceeded):
        await store.create_run(run("ses_y", "frugal"), session(), quota)


async def test_a_repeated_idempotency_key_returns_the_first_run_and_writes_nothing(store: Store) -> None:
    first = run("ses_i1")
    key = Admission(idempotency_key="k-1", fingerprint="same", since=T0 - 1)
    assert await store.create_run(first, session(), key) == first
    again = await store.create_run(run("ses_i2"), session(), key)
    assert again.run_id == first.run_id
    assert [r.run_id for r in await store.list_runs(RunQuery("alice"))] == [first.run_id]
    assert await store.idempotent_run("alice", "k-1", T0 - 1) == ("same", first)
    assert await store.idempotent_run("bob", "k-1", T0 - 1) is None  # keys are per owner


async def test_a_key_repeated_with_another_request_is_refused(store: Store) -> None:
    await store.create_run(run("ses_i1"), session(), Admission(idempotency_key="k", fingerprint="a", since=T0 - 1))
    with pytest.raises(IdempotencyKeyReused):
        await store.create_run(run("ses_i2"), session(), Admission(idempotency_key="k", fingerprint="b", since=T0 - 1))
    assert len(await store.list_runs(RunQuery("alice"))) == 1


async def test_an_expired_idempotency_key_creates_a_new_run(store: Store) -> None:
    old = run("ses_i1", at=T0)
    await store.create_run(old, session(), Admission(idempotency_key="k", fingerprint="a", since=T0 - 1))
    later = Admission(idempotency_key="k", fingerprint="a", since=T0 + 1)  # the first use is older than the window
    fresh = run("ses_i2", at=T0 + 2)
    assert await store.create_run(fresh, session(), later) == fresh
    assert await store.idempotent_run("alice", "k", T0 + 1) == ("a", fresh)
    assert await store.forget_idempotency_keys(T0 + 3) == 1
    assert await store.idempotent_run("alice", "k", 0) is None


async def test_creations_racing_with_one_key_make_exactly_one_run(store: Store) -> None:
    key = Admission(quota=100, idempotency_key="race", fingerprint="f", since=T0 - 1)
    stored = await asyncio.gather(*(store.create_run(run(f"ses_r{i}"), session(), key) for i in range(10)))
    assert len({r.run_id for r in stored}) == 1
    assert len(await store.list_runs(RunQuery("alice"))) == 1


async def test_enter_session_enqueues_behind_unfinished_runs_and_counts_as_activity(store: Store) -> None:
    s, first, second = await busy_session(store)
    third = run(s.session_id, at=T0 + 5)
    entered = await store.enter_session(third, ENQUEUE)
    assert (entered.run, entered.cancelled) == (third, [])
    assert [r.run_id for r in await store.unfinished_runs(s.session_id)] == [first.run_id, second.run_id, third.run_id]
    assert (await store.get_session(s.session_id)).last_activity == T0 + 5  # type: ignore[union-attr]


async def test_enter_session_with_reject_refuses_a_busy_session_and_writes_nothing(store: Store) -> None:
    s, first, second = await busy_session(store)
    refused = run(s.session_id)
    with pytest.raises(SessionBusy, match=first.run_id):
        await store.enter_session(refused, REJECT, Admission(quota=1, idempotency_key="k", fingerprint="f"))
    assert await store.get_run(refused.run_id) is None
    assert await store.idempotent_run("alice", "k", 0.0) is None
    for r in (first, second):
        await finish(store, r.run_id)
    accepted = run(s.session_id)  # the quota of 1 was not spent by the refusal
    assert (await store.enter_session(accepted, REJECT, Admission(quota=1))).run == accepted


async def test_enter_session_with_interrupt_cancels_every_unfinished_run_in_its_transaction(store: Store) -> None:
    s, running, queued = await busy_session(store)
    newcomer = run(s.session_id, at=T0 + 5)
    entered = await store.enter_session(newcomer, INTERRUPT)
    assert entered.run == newcomer
    first, second = entered.cancelled
    assert_cancelled_by_the_store(first, running.run_id, was_running=True)
    assert_cancelled_by_the_store(second, queued.run_id, was_running=False)
    for r in (running, queued):
        await assert_ended_cancelled(store, r.run_id)
    assert [r.run_id for r in await store.unfinished_runs(s.session_id)] == [newcomer.run_id]
    # the worker still executing the interrupted run can write nothing more
    (refused,) = await store.append([AppendGroup(running.run_id, drafts(running.run_id, 1), fence=Fence("w1", 1))])
    assert isinstance(refused, LeaseLost)
    assert (await store.renew_leases("w1", [running.run_id], T0 + 60)).lost == {running.run_id}


async def test_enter_session_refuses_missing_deleted_foreign_and_expired_sessions(store: Store) -> None:
    with pytest.raises(SessionNotFound):
        await store.enter_session(run("ses_missing"), ENQUEUE)
    foreign = session("bob")
    gone = session()
    stale = session(at=T0 - 7200)
    for s in (foreign, gone, stale):
        await store.create_session(s)
    await store.delete_session(gone.session_id, T0)
    for s in (foreign, gone):
        with pytest.raises(SessionNotFound, match="no session"):
            await store.enter_session(run(s.session_id), ENQUEUE)
    with pytest.raises(SessionNotFound, match="expired"):
        await store.enter_session(run(stale.session_id), ENQUEUE)
    assert await store.list_runs(RunQuery(None)) == []
    # idle past its TTL, but with a run still unfinished, a session is alive
    await created(store, run(stale.session_id))
    await store.enter_session(run(stale.session_id), ENQUEUE)


async def test_enter_session_repeating_an_idempotency_key_cancels_nothing(store: Store) -> None:
    s, *_ = await busy_session(store)
    admission = Admission(idempotency_key="k", fingerprint="f")
    first = run(s.session_id)
    await store.enter_session(first, ENQUEUE, admission)
    repeat = await store.enter_session(run(s.session_id), INTERRUPT, admission)
    assert (repeat.run.run_id, repeat.cancelled) == (first.run_id, [])
    assert len(await store.unfinished_runs(s.session_id)) == 3


async def test_racing_entries_with_reject_admit_exactly_one(store: Store) -> None:
    """Regression: two creations racing on one session through two API processes
    both got 201 with multitask=reject (a process-local lock)."""
    s = session()
    await store.create_session(s)
    outcomes = await asyncio.gather(
        *(store.enter_session(run(s.session_id), REJECT) for _ in range(10)), return_exceptions=True
    )
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 1
    assert all(isinstance(o, SessionBusy) for o in outcomes if isinstance(o, BaseException))


async def test_racing_entries_with_interrupt_leave_exactly_one_unfinished_run(store: Store) -> None:
    """Regression: two interrupting creations racing through two API processes both
    stayed alive (each cancelled what it had read before the other's insertion)."""
    s = session()
    await store.create_session(s)
    entered = await asyncio.gather(*(store.enter_session(run(s.session_id), INTERRUPT) for _ in range(10)))
    (survivor,) = await store.unfinished_runs(s.session_id)
    assert survivor.run_id in {e.run.run_id for e in entered}
    assert sum(len(e.cancelled) for e in entered) == 9


# -- RunRecords: reading runs ------------------------------------------------------


async def test_created_run_reads_back_equal_in_every_field(store: Store) -> None:
    r = run(
        input={"text": "naïve café ☕", "nested": {"list": [1, 2.5, None, True]}},
        metadata={"source": "ui", "ключ": "значение"},
        timeout_s=30.0,
        max_attempts=3,
    )
    await store.create_run(r)
    assert await store.get_run(r.run_id) == r


async def test_unknown_run_is_none(store: Store) -> None:
    assert await store.get_run("run_missing") is None


async def test_returned_runs_are_copies(store: Store) -> None:
    (r,) = await created(store, run(metadata={"k": "v"}))
    found = await store.get_run(r.run_id)
    assert found is not None
    found.metadata["k"] = "changed"
    found.status = RunStatus.FAILED
    assert await store.get_run(r.run_id) == r


async def test_list_runs_newest_first_filtered_and_paged_by_before(store: Store) -> None:
    runs = await created(store, *(run("ses_a" if i % 2 else "ses_b", at=T0 + i) for i in range(6)))
    newest_first = [r.run_id for r in reversed(runs)]

    assert [r.run_id for r in await store.list_runs(RunQuery("alice"))] == newest_first
    first_page = await store.list_runs(RunQuery("alice", limit=2))
    assert [r.run_id for r in first_page] == newest_first[:2]
    second_page = await store.list_runs(RunQuery("alice", limit=2, before=first_page[-1].run_id))
    assert [r.run_id for r in second_page] == newest_first[2:4]
    in_a = await store.list_runs(RunQuery("alice", session_id="ses_a"))
    assert [r.run_id for r in in_a] == [r.run_id for r in reversed(runs) if r.session_id == "ses_a"]
    assert await store.list_runs(RunQuery("alice", before=runs[0].run_id)) == []


async def test_list_runs_filters_by_status(store: Store) -> None:
    _queued, done, failed = await created(store, run(), run(status=RunStatus.SUCCEEDED), run(status=RunStatus.FAILED))
    finished = await store.list_runs(RunQuery("alice", statuses=(RunStatus.SUCCEEDED, RunStatus.FAILED)))
    assert [r.run_id for r in finished] == [failed.run_id, done.run_id]
    assert len(await store.list_runs(RunQuery("alice", statuses=()))) == 3


async def test_list_runs_keeps_creation_order_when_created_at_ties(store: Store) -> None:
    runs = await created(store, *(run(at=T0) for _ in range(5)))
    assert [r.run_id for r in await store.list_runs(RunQuery("alice"))] == [r.run_id for r in reversed(runs)]


async def test_other_owners_runs_not_listed(store: Store) -> None:
    mine, theirs, also_mine = await created(store, run(owner="alice"), run(owner="bob"), run(owner="alice"))
    assert [r.run_id for r in await store.list_runs(RunQuery("alice"))] == [also_mine.run_id, mine.run_id]
    assert [r.run_id for r in await store.list_runs(RunQuery("bob"))] == [theirs.run_id]
    assert await store.list_runs(RunQuery("carol")) == []
    everyone = await store.list_runs(RunQuery(None))
    assert [r.run_id for r in everyone] == [also_mine.run_id, theirs.run_id, mine.run_id]


async def test_list_runs_before_a_cursor_skips_other_owners_runs_in_between(store: Store) -> None:
    a1, _b1, a2, _b2 = await created(store, run(), run(owner="bob"), run(), run(owner="bob"))
    assert [r.run_id for r in await store.list_runs(RunQuery("alice", before=a2.run_id))] == [a1.run_id]


async def test_list_runs_before_unknown_run_lists_nothing(store: Store) -> None:
    await created(store, run())
    assert await store.list_runs(RunQuery("alice", before="run_missing")) == []


# -- RunQueue: claims, fencing, leases, cancel requests, served pipelines (issue 10) --


async def test_expired_leases_and_renewal(store: Store) -> None:
    lapsing, held, _queued = await created(
        store,
        run(status=RunStatus.RUNNING, worker_id="w1", lease_expires_at=T0 + 10),
        run(status=RunStatus.RUNNING, worker_id="w2", lease_expires_at=T0 + 10),
        run(lease_expires_at=T0),  # not running: never "expired"
    )
    assert [r.run_id for r in await store.expired_leases(T0 + 20)] == [lapsing.run_id, held.run_id]
    assert await store.expired_leases(T0 + 10) == []  # "before", not "at"

    renewal = await store.renew_leases("w2", [held.run_id, lapsing.run_id], T0 + 40)  # w2 holds only one
    assert renewal == LeaseRenewal(lost={lapsing.run_id}, cancel=set())
    assert [r.run_id for r in await store.expired_leases(T0 + 20)] == [lapsing.run_id]
    renewed = await store.get_run(held.run_id)
    assert renewed is not None
    assert renewed.lease_expires_at == T0 + 40
    assert renewed.worker_id == "w2"


async def test_renew_leases_skips_runs_no_longer_running(store: Store) -> None:
    (r,) = await created(store, run(status=RunStatus.SUCCEEDED, worker_id="w1", lease_expires_at=T0))
    assert (await store.renew_leases("w1", [r.run_id], T0 + 40)).lost == {r.run_id}
    assert await store.renew_leases("w1", [], T0 + 40) == LeaseRenewal()
    assert await store.get_run(r.run_id) == r


async def claimed_ids(store: Store, limit: int, worker: str = "w1", at: float = T0) -> list[str]:
    return [c.run.run_id for c in await store.claim(worker, limit, at, at + 30, pipelines=SERVED)]


async def finish(store: Store, run_id: str) -> None:
    done = RunUpdate(status=RunStatus.SUCCEEDED, finished_at=T0, clear_lease=True)
    events((await store.append([AppendGroup(run_id, [], done)]))[0])


async def test_claim_marks_runs_running_under_a_lease_with_their_status_event(store: Store) -> None:
    (queued,) = await created(store, run(attempt=2, max_attempts=3))
    (claim,) = await store.claim("w1", 5, T0 + 1, T0 + 31, pipelines=SERVED)
    assert (claim.run.run_id, claim.run.status, claim.run.attempt) == (queued.run_id, RunStatus.RUNNING, 2)
    assert (claim.run.worker_id, claim.run.lease_expires_at, claim.run.started_at) == ("w1", T0 + 31, T0 + 1)
    assert (claim.event.seq, claim.event.type) == (1, "status")
    assert json.loads(claim.event.data) == {"status": "running", "attempt": 2}
    assert claim.cancel_requested is False
    assert await store.get_run(queued.run_id) == claim.run
    assert await store.read_events(queued.run_id, 0, 10) == [claim.event]
    assert await store.claim("w2", 5, T0 + 2, T0 + 32, pipelines=SERVED) == []  # taken


async def test_claim_takes_at_most_limit_and_counts_the_queue(store: Store) -> None:
    await created(store, *(run(f"ses_{i}") for i in range(5)))
    assert await store.count_queued() == 5
    assert len(await claimed_ids(store, 2)) == 2
    assert await store.count_queued() == 3
    assert await store.claim("w1", 0, T0, T0 + 30, pipelines=SERVED) == []


async def test_claim_runs_a_sessions_runs_one_at_a_time_in_order(store: Store) -> None:
    first, second, other = await created(store, run("ses_a"), run("ses_a"), run("ses_b"))
    assert await claimed_ids(store, 10) == [first.run_id, other.run_id]
    assert await claimed_ids(store, 10) == []  # the session's head is still running
    await finish(store, first.run_id)
    assert await claimed_ids(store, 10) == [second.run_id]


async def test_claim_passes_over_more_blocked_runs_than_its_limit_to_a_ready_one(store: Store) -> None:
    head, *behind = await created(store, *(run("ses_a") for _ in range(4)))
    assert await claimed_ids(store, 1) == [head.run_id]
    other_pipeline, later, ready = await created(
        store, run("ses_p", pipeline="elsewhere"), run("ses_l", scheduled_for=T0 + 60), run("ses_r")
    )
    # an owner's queued runs are read in order: three wait for their session's head,
    # one for a pipeline this worker does not serve, one for its time
    assert await claimed_ids(store, 1) == [ready.run_id]
    assert await claimed_ids(store, 5, at=T0 + 61) == [later.run_id]
    await finish(store, head.run_id)
    assert await claimed_ids(store, 5, at=T0 + 61) == [behind[0].run_id]
    assert await store.get_run(other_pipeline.run_id) == other_pipeline


async def test_claim_serves_owners_fairly(store: Store) -> None:
    greedy = await created(store, *(run(f"ses_g{i}", "greedy") for i in range(4)))
    (modest,) = await created(store, run("ses_m", "modest"))
    # one slot: the oldest run first, then the owner served least recently
    assert await claimed_ids(store, 1, at=T0 + 1) == [greedy[0].run_id]
    await finish(store, greedy[0].run_id)
    assert await claimed_ids(store, 1, at=T0 + 2) == [modest.run_id]
    # several slots at once: owners take turns counting their running runs (modest has one)
    more = await created(store, run("ses_m2", "modest"), run("ses_m3", "modest"))
    assert await claimed_ids(store, 3, at=T0 + 3) == [greedy[1].run_id, greedy[2].run_id, more[0].run_id]


async def test_concurrent_claims_never_take_one_run_twice(store: Store) -> None:
    queued = await created(store, *(run(f"ses_{i}", f"owner{i % 3}") for i in range(40)))
    batches = await asyncio.gather(*(claimed_ids(store, 7, worker=f"w{i}") for i in range(8)))
    taken = [run_id for batch in batches for run_id in batch]
    assert len(taken) == len(set(taken))
    # a claimer may come back with fewer runs than it asked for (others held the
    # rows it read), never with a run another claimer took; the rest is still there
    taken += await claimed_ids(store, 40, worker="w9")
    assert sorted(taken) == sorted(r.run_id for r in queued)


async def test_concurrent_claims_of_new_owners_runs_never_take_one_run_twice(store: Store) -> None:
    """The same when every run is a new owner's: claims that look for new owners'
    first runs among the oldest queued (``FRESH_CLAIMS_UP_TO``) read the same few."""
    queued = await created(store, *(run(f"ses_{i}", f"newcomer{i}") for i in range(200)))
    batches = await asyncio.gather(*(claimed_ids(store, 7, worker=f"w{i}") for i in range(8)))
    taken = [run_id for batch in batches for run_id in batch]
    assert taken and len(taken) == len(set(taken))
    taken += await claimed_ids(store, 200, worker="w9")
    assert sorted(taken) == sorted(r.run_id for r in queued)


async def test_fenced_writes_need_the_worker_and_attempt_holding_the_run(store: Store) -> None:
    (queued,) = await created(store, run(max_attempts=2))
    (claim,) = await store.claim("w1", 1, T0, T0 + 30, pipelines=SERVED)
    held = Fence("w1", 1)
    assert len(events((await store.append([AppendGroup(queued.run_id, drafts(queued.run_id, 2), fence=held)]))[0])) == 2
    for stranger in (Fence("w2", 1), Fence("w1", 2)):
        (refused,) = await store.append([AppendGroup(queued.run_id, drafts(queued.run_id, 1), fence=stranger)])
        assert isinstance(refused, LeaseLost) and refused.actual is RunStatus.RUNNING
    # recovered elsewhere: queued again as attempt 2, then claimed by w2
    recover = RunUpdate(status=RunStatus.QUEUED, expect=frozenset({RunStatus.RUNNING}), attempt=2, clear_lease=True)
    events((await store.append([AppendGroup(queued.run_id, [], recover)]))[0])
    (reclaim,) = await store.claim("w2", 1, T0 + 40, T0 + 70, pipelines=SERVED)
    assert (reclaim.run.attempt, reclaim.event.seq) == (2, claim.event.seq + 3)
    (stale,) = await store.append([AppendGroup(queued.run_id, drafts(queued.run_id, 1), fence=held)])
    assert isinstance(stale, LeaseLost)
    assert (await store.get_run(queued.run_id)).last_seq == reclaim.event.seq  # type: ignore[union-attr]


async def test_recovery_applies_only_to_a_lease_that_ended(store: Store) -> None:
    (r,) = await created(store, run(status=RunStatus.RUNNING, worker_id="w1", lease_expires_at=T0 + 10))
    recover = RunUpdate(status=RunStatus.QUEUED, expect=frozenset({RunStatus.RUNNING}), clear_lease=True)
    recover.lease_expired_by = T0 + 5  # the holder renewed in time
    assert isinstance((await store.append([AppendGroup(r.run_id, [], recover)]))[0], StatusConflict)
    await store.renew_leases("w1", [r.run_id], T0 + 50)
    recover.lease_expired_by = T0 + 20  # the lease read as expired was renewed meanwhile
    assert isinstance((await store.append([AppendGroup(r.run_id, [], recover)]))[0], StatusConflict)
    recover.lease_expired_by = T0 + 60
    events((await store.append([AppendGroup(r.run_id, [], recover)]))[0])
    assert (await store.get_run(r.run_id)).status is RunStatus.QUEUED  # type: ignore[union-attr]


async def test_cancel_requests_reach_the_holder_and_the_next_claim(store: Store) -> None:
    (r,) = await created(store, run(max_attempts=2))
    await store.claim("w1", 1, T0, T0 + 30, pipelines=SERVED)
    await store.request_cancel(r.run_id)
    assert await store.renew_leases("w1", [r.run_id], T0 + 40) == LeaseRenewal(cancel={r.run_id})
    # the holder died before it could stop the run; the next attempt is cancelled at once
    requeue = RunUpdate(status=RunStatus.QUEUED, attempt=2, clear_lease=True)
    events((await store.append([AppendGroup(r.run_id, [], requeue)]))[0])
    (claim,) = await store.claim("w2", 1, T0 + 50, T0 + 80, pipelines=SERVED)
    assert claim.cancel_requested is True


async def test_cancel_request_for_a_run_not_running_is_ignored(store: Store) -> None:
    queued, done = await created(store, run(), run(status=RunStatus.SUCCEEDED))
    await store.request_cancel(queued.run_id)
    await store.request_cancel(done.run_id)
    await store.request_cancel("run_missing")
    (claim,) = await store.claim("w1", 1, T0, T0 + 30, pipelines=SERVED)
    assert claim.cancel_requested is False


async def test_claim_leaves_a_run_of_a_pipeline_not_served_queued_until_a_worker_serves_it(store: Store) -> None:
    """Regression: an old worker claimed (and failed) the first runs of a pipeline a
    deploy had just added; now it leaves them queued for a worker that serves it."""
    new = run("ses_new", pipeline="added")
    old = run("ses_old")
    await created(store, new, old)
    assert [c.run.run_id for c in await store.claim("old", 10, T0, T0 + 30, pipelines=["ticker"])] == [old.run_id]
    assert await store.claim("old", 10, T0, T0 + 30, pipelines=["ticker"]) == []
    kept = await store.get_run(new.run_id)
    assert kept is not None and (kept.status, kept.last_seq) == (RunStatus.QUEUED, 0)
    assert await store.claim("none", 10, T0, T0 + 30, pipelines=[]) == []
    (claim,) = await store.claim("new", 10, T0 + 1, T0 + 31, pipelines=["ticker", "added"])
    assert (claim.run.run_id, claim.run.worker_id) == (new.run_id, "new")


async def test_a_session_waits_behind_its_oldest_run_when_that_pipeline_is_not_served(store: Store) -> None:
    head, _ = await created(store, run("ses_s", pipeline="added"), run("ses_s"))
    assert await store.claim("old", 10, T0, T0 + 30, pipelines=["ticker"]) == []  # order within a session holds
    assert [c.run.run_id for c in await store.claim("new", 10, T0, T0 + 30, pipelines=["added"])] == [head.run_id]


async def test_unserved_pipelines_names_queued_runs_no_live_worker_serves(store: Store) -> None:
    await created(store, run("ses_1"), run("ses_2", pipeline="added"), run("ses_3", pipeline="added"))
    await created(store, run("ses_4", pipeline="gone", status=RunStatus.SUCCEEDED))  # not waiting
    assert await store.unserved_pipelines(T0) == {"ticker": 1, "added": 2}
    await store.worker_seen("w1", ["ticker", "other"], T0 + 10)
    await store.worker_seen("w2", [], T0 + 10)
    assert await store.unserved_pipelines(T0) == {"added": 2}
    assert await store.unserved_pipelines(T0 + 11) == {"ticker": 1, "added": 2}  # w1 not seen since
    await store.worker_seen("w1", ["added"], T0 + 20)  # a worker's record is replaced, not merged
    assert await store.unserved_pipelines(T0) == {"ticker": 1}
    await store.forget_worker("w1")
    await store.forget_worker("w_missing")
    assert await store.unserved_pipelines(T0) == {"ticker": 1, "added": 2}


async def test_records_of_workers_long_unseen_are_dropped(store: Store) -> None:
    await created(store, run())
    await store.worker_seen("killed", ["ticker"], T0)
    await store.worker_seen("alive", [], T0 + WORKER_FORGOTTEN_S + 1)
    assert await store.unserved_pipelines(0.0) == {"ticker": 1}  # "killed" is gone, whatever the window


# -- EventStore: gap-free numbering, updates with their events, replay ---------------


async def test_append_numbers_events_from_one_without_gaps(store: Store) -> None:
    (r,) = await created(store, run())
    (result,) = await store.append([AppendGroup(r.run_id, drafts(r.run_id, 5))])
    assert [e.seq for e in events(result)] == [1, 2, 3, 4, 5]
    assert await all_events(store, r.run_id) == events(result)
    found = await store.get_run(r.run_id)
    assert found is not None
    assert found.last_seq == 5


async def test_append_continues_from_last_seq(store: Store) -> None:
    (r,) = await created(store, run())
    await store.append([AppendGroup(r.run_id, drafts(r.run_id, 2))])
    (result,) = await store.append([AppendGroup(r.run_id, drafts(r.run_id, 3))])
    assert [e.seq for e in events(result)] == [3, 4, 5]
    assert [e.seq for e in await all_events(store, r.run_id)] == [1, 2, 3, 4, 5]


async def test_appended_events_keep_run_type_data_and_ts(store: Store) -> None:
    (r,) = await created(store, run())
    sent = [
        EventDraft(r.run_id, "phase", b'{"name":"plan"}', T0 + 0.123456),
        EventDraft(r.run_id, "x.y-z", b"[]", T0),
    ]
    (result,) = await store.append([AppendGroup(r.run_id, sent)])
    expected = [Event(r.run_id, i + 1, d.type, d.data, d.ts) for i, d in enumerate(sent)]
    assert events(result) == expected
    assert await all_events(store, r.run_id) == expected


async def test_event_data_bytes_round_trip_unchanged(store: Store) -> None:
    (r,) = await created(store, run())
    payloads = [
        b'{"b": 1,   "a": [1, 2]}',  # whitespace and key order are not normalised
        '{"text":"Grüße, 世界 🌍"}'.encode(),
        b'"\\u00e9 escaped stays escaped"',
        b"null",
        b'{"pad":"' + b"x" * 70_000 + b'"}',
    ]
    await store.append([AppendGroup(r.run_id, [EventDraft(r.run_id, "blob", p, T0) for p in payloads])])
    read = await all_events(store, r.run_id)
    assert [e.data for e in read] == payloads
    assert all(type(e.data) is bytes for e in read)


async def test_append_of_nothing_returns_nothing(store: Store) -> None:
    assert await store.append([]) == []


async def test_append_returns_one_result_per_group_in_order(store: Store) -> None:
    a, b = await created(store, run(), run())
    results = await store.append(
        [
            AppendGroup(a.run_id, drafts(a.run_id, 2)),
            AppendGroup("run_missing", drafts("run_missing", 1)),
            AppendGroup(b.run_id, drafts(b.run_id, 1)),
        ]
    )
    assert [e.run_id for e in events(results[0])] == [a.run_id, a.run_id]
    assert isinstance(results[1], StatusConflict)
    assert [(e.run_id, e.seq) for e in events(results[2])] == [(b.run_id, 1)]


async def test_append_to_missing_run_is_a_conflict_without_status(store: Store) -> None:
    (result,) = await store.append([AppendGroup("run_missing", drafts("run_missing", 1))])
    assert isinstance(result, StatusConflict)
    assert (result.run_id, result.actual) == ("run_missing", None)
    assert await all_events(store, "run_missing") == []


async def test_update_travels_with_its_events(store: Store) -> None:
    (r,) = await created(store, run())
    start = RunUpdate(
        status=RunStatus.RUNNING,
        expect=frozenset({RunStatus.QUEUED}),
        started_at=T0 + 1,
        attempt=2,
        worker_id="w1",
        lease_expires_at=T0 + 31,
    )
    (result,) = await store.append([AppendGroup(r.run_id, drafts(r.run_id, 1, "status"), start)])
    assert len(events(result)) == 1
    found = await store.get_run(r.run_id)
    assert found is not None
    assert (found.status, found.started_at, found.attempt, found.last_seq) == (
        RunStatus.RUNNING,
        T0 + 1,
        2,
        1,
    )
    assert (found.worker_id, found.lease_expires_at) == ("w1", T0 + 31)

    finish = RunUpdate(
        status=RunStatus.SUCCEEDED,
        output={"report": "fertig ✓"},
        set_output=True,
        finished_at=T0 + 9,
        clear_lease=True,
    )
    await store.append([AppendGroup(r.run_id, drafts(r.run_id, 2, "end"), finish)])
    found = await store.get_run(r.run_id)
    assert found is not None
    assert (found.status, found.output, found.finished_at) == (
        RunStatus.SUCCEEDED,
        {"report": "fertig ✓"},
        T0 + 9,
    )
    assert (found.worker_id, found.lease_expires_at, found.last_seq, found.started_at) == (
        None,
        None,
        3,
        T0 + 1,
    )


async def test_update_leaves_fields_it_does_not_name(store: Store) -> None:
    (r,) = await created(store, run(status=RunStatus.RUNNING, output=[1], worker_id="w1", lease_expires_at=T0))
    await store.append([AppendGroup(r.run_id, [], RunUpdate(error=RunError("boom", "it broke")))])
    found = await store.get_run(r.run_id)
    assert found is not None
    assert found.error == RunError("boom", "it broke")
    assert (found.output, found.worker_id, found.lease_expires_at, found.last_seq) == ([1], "w1", T0, 0)


async def test_set_output_can_clear_the_output(store: Store) -> None:
    (r,) = await created(store, run(output={"old": True}))
    await store.append([AppendGroup(r.run_id, [], RunUpdate(output=None, set_output=True))])
    found = await store.get_run(r.run_id)
    assert found is not None
    assert found.output is None


async def test_clear_lease_then_a_new_holder_in_one_update(store: Store) -> None:
    (r,) = await created(store, run(status=RunStatus.RUNNING, worker_id="w1", lease_expires_at=T0))
    await store.append([AppendGroup(r.run_id, [], RunUpdate(clear_lease=True, worker_id="w2"))])
    found = await store.get_run(r.run_id)
    assert found is not None
    assert (found.worker_id, found.lease_expires_at) == ("w2", None)


async def test_group_with_only_an_update_writes_no_events(store: Store) -> None:
    (r,) = await created(store, run())
    (result,) = await store.append([AppendGroup(r.run_id, [], RunUpdate(status=RunStatus.CANCELLED))])
    assert result == []
    found = await store.get_run(r.run_id)
    assert found is not None
    assert (found.status, found.last_seq) == (RunStatus.CANCELLED, 0)


async def test_conditional_update_refuses_whole_group_but_not_others_in_batch(store: Store) -> None:
    done, fresh = await created(store, run(status=RunStatus.SUCCEEDED), run())
    cancel = RunUpdate(status=RunStatus.CANCELLED, expect=frozenset({RunStatus.QUEUED, RunStatus.RUNNING}))
    refused, accepted = await store.append(
        [
            AppendGroup(done.run_id, drafts(done.run_id, 2), cancel),
            AppendGroup(fresh.run_id, drafts(fresh.run_id, 2), cancel),
        ]
    )
    assert isinstance(refused, StatusConflict)
    assert (refused.run_id, refused.actual) == (done.run_id, RunStatus.SUCCEEDED)
    assert await store.get_run(done.run_id) == done
    assert await all_events(store, done.run_id) == []
    assert [e.seq for e in events(accepted)] == [1, 2]
    found = await store.get_run(fresh.run_id)
    assert found is not None
    assert (found.status, found.last_seq) == (RunStatus.CANCELLED, 2)


async def test_groups_of_one_run_in_one_batch_see_each_others_updates(store: Store) -> None:
    (r,) = await created(store, run())
    only_queued = frozenset({RunStatus.QUEUED})
    first, second, third = await store.append(
        [
            AppendGroup(r.run_id, drafts(r.run_id, 2), RunUpdate(status=RunStatus.RUNNING, expect=only_queued)),
            AppendGroup(r.run_id, drafts(r.run_id, 1), RunUpdate(status=RunStatus.RUNNING, expect=only_queued)),
            AppendGroup(r.run_id, drafts(r.run_id, 2), RunUpdate(worker_id="w9")),
        ]
    )
    assert [e.seq for e in events(first)] == [1, 2]
    assert isinstance(second, StatusConflict)
    assert second.actual is RunStatus.RUNNING
    assert [e.seq for e in events(third)] == [3, 4]
    found = await store.get_run(r.run_id)
    assert found is not None
    assert (found.status, found.worker_id, found.last_seq) == (RunStatus.RUNNING, "w9", 4)
    assert [e.seq for e in await all_events(store, r.run_id)] == [1, 2, 3, 4]


async def test_concurrent_appends_to_one_run_never_share_or_skip_a_seq(store: Store) -> None:
    shared, other = await created(store, run(), run())

    async def writer(n: int) -> list[AppendResult]:
        return await store.append(
            [
                AppendGroup(shared.run_id, drafts(shared.run_id, n)),
                AppendGroup(other.run_id, drafts(other.run_id, 1)),
            ]
        )

    batches = await asyncio.gather(*(writer(1 + i % 4) for i in range(60)))
    total = sum(1 + i % 4 for i in range(60))
    handed_out = sorted(e.seq for mine, _ in batches for e in events(mine))
    assert handed_out == list(range(1, total + 1))
    for mine, _ in batches:  # a group's events are consecutive
        seqs = [e.seq for e in events(mine)]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert [e.seq for e in await all_events(store, shared.run_id)] == list(range(1, total + 1))
    assert [e.seq for e in await all_events(store, other.run_id)] == list(range(1, 61))


async def test_read_events_pages_after_cursor(store: Store) -> None:
    (r,) = await created(store, run())
    await store.append([AppendGroup(r.run_id, drafts(r.run_id, 10))])
    assert [e.seq for e in await store.read_events(r.run_id, 0, 4)] == [1, 2, 3, 4]
    assert [e.seq for e in await store.read_events(r.run_id, 4, 4)] == [5, 6, 7, 8]
    assert [e.seq for e in await store.read_events(r.run_id, 8, 4)] == [9, 10]
    assert await store.read_events(r.run_id, 10, 4) == []
    assert await store.read_events(r.run_id, 99, 4) == []


async def test_read_events_of_unknown_run_is_empty(store: Store) -> None:
    assert await store.read_events("run_missing", 0, 100) == []


async def test_runs_event_logs_are_apart(store: Store) -> None:
    a, b = await created(store, run(), run(owner="bob"))
    await store.append([AppendGroup(a.run_id, drafts(a.run_id, 3)), AppendGroup(b.run_id, drafts(b.run_id, 2))])
    assert {e.run_id for e in await all_events(store, a.run_id)} == {a.run_id}
    assert [e.seq for e in await all_events(store, b.run_id)] == [1, 2]


@pytest.mark.slow
async def test_a_100k_event_run_replays_completely_in_order(store: Store) -> None:
    [big] = await created(store, run())
    for _ in range(0, 100_000, 5_000):
        events((await store.append([AppendGroup(big.run_id, drafts(big.run_id, 5_000))]))[0])
    seen = after = 0
    while page := await store.read_events(big.run_id, after, 2_000):
        assert [e.seq for e in page] == list(range(after + 1, after + 1 + len(page)))
        after, seen = page[-1].seq, seen + len(page)
    assert seen == 100_000


# -- Retention: sweeps and forgetting ----------------------------------------------


async def test_sweep_deletes_old_finished_runs_and_their_events_only(store: Store) -> None:
    old, recent, old_running, queued = await created(
        store,
        run(status=RunStatus.RUNNING),
        run(status=RunStatus.RUNNING),
        run(status=RunStatus.RUNNING),
        run(),
    )
    finish = RunUpdate(status=RunStatus.SUCCEEDED, finished_at=T0 + 10)
    results = await store.append(
        [
            AppendGroup(old.run_id, drafts(old.run_id, 3), finish),
            AppendGroup(recent.run_id, drafts(recent.run_id, 3), RunUpdate(RunStatus.FAILED, finished_at=T0 + 100)),
            AppendGroup(old_running.run_id, drafts(old_running.run_id, 3), RunUpdate(finished_at=T0 + 10)),
            AppendGroup(queued.run_id, drafts(queued.run_id, 3)),
        ]
    )
    assert all(isinstance(result, list) for result in results)

    assert await store.sweep_runs(T0 + 50) == 1
    assert await store.get_run(old.run_id) is None
    assert await all_events(store, old.run_id) == []
    for kept in (recent, old_running, queued):
        assert await store.get_run(kept.run_id) is not None
        assert len(await all_events(store, kept.run_id)) == 3
    assert [r.run_id for r in await store.list_runs(RunQuery("alice"))] == [
        queued.run_id,
        old_running.run_id,
        recent.run_id,
    ]
    assert await store.sweep_runs(T0 + 50) == 0


async def test_forget_idle_sessions(store: Store) -> None:
    idle, idle_silent, active = session(at=T0), session(at=T0), session(at=T0)
    for s in (idle, idle_silent, active):
        await store.create_session(s)
    await store.append_message(idle.session_id, Message("user", "old", T0), keep=5)
    await store.append_message(active.session_id, Message("user", "new", T0), keep=5)
    await store.touch_session(active.session_id, T0 + 100)

    assert await store.forget_idle_sessions(T0 + 50) == 1  # idle_silent had nothing to forget
    assert await store.history(idle.session_id) == []
    assert [m.content for m in await store.history(active.session_id)] == ["new"]
    assert await store.get_session(idle.session_id) is not None
    assert await store.forget_idle_sessions(T0 + 50) == 0
