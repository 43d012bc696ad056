"""The store's part of the operations console, the same on every backend: the run
search and time range of a listing (``RunQuery.text``, ``since``, ``until``) and
each pipeline's health over a window (``RunStats.pipeline_stats``)."""

from __future__ import annotations

import itertools
from typing import Any

from runyard.models import EventDraft, Run, RunError, RunStatus, RunUpdate, Session, dumps
from runyard.pricing import Tokens
from runyard.store import AppendGroup, Store
from runyard.store.base import RunQuery

T0 = 1_700_000_000.0
_ids = itertools.count(1)


async def make_run(store: Store, owner: str = "alice", *, at: float = T0, **fields: Any) -> Run:
    session = Session(f"ses_c{next(_ids)}", owner, created_at=at, last_activity=at)
    fields.setdefault("input", {"topic": "otters"})
    fields.setdefault("pipeline", "research")
    run = Run(f"run_c{next(_ids)}", session.session_id, owner, status=RunStatus.RUNNING, created_at=at, **fields)
    await store.create_run(run, session)
    return run


async def finish(
    store: Store,
    run: Run,
    status: RunStatus,
    started: float,
    took: float,
    usage: tuple[dict[str, Any], ...] = (),
    error: RunError | None = None,
) -> None:
    drafts = [EventDraft(run.run_id, "usage", dumps(data), started) for data in usage]
    update = RunUpdate(status, started_at=started, finished_at=started + took, error=error)
    [result] = await store.append([AppendGroup(run.run_id, drafts, update)])
    assert isinstance(result, list), result


async def ids(store: Store, **query: Any) -> list[str]:
    return [run.run_id for run in await store.list_runs(RunQuery(**{"owner": None, **query}))]


# -- search and time range ---------------------------------------------------------


async def test_search_finds_a_run_by_its_error_text_input_owner_session_or_id(store: Store) -> None:
    broken = await make_run(store, "bob", input={"topic": "Sea Otters"})
    other = await make_run(store, "carol", input={"topic": "beavers"})
    await finish(store, broken, RunStatus.FAILED, T0, 1, error=RunError("boom", "The Upstream said NO-42"))

    assert await ids(store, text="no-42") == [broken.run_id]  # error text, any ASCII case
    assert await ids(store, text="sea otters") == [broken.run_id]  # input text
    assert await ids(store, text="carol") == [other.run_id]  # owner
    assert await ids(store, text=other.session_id) == [other.run_id]  # session
    assert await ids(store, text=broken.run_id.upper()) == [broken.run_id]  # run id
    assert await ids(store, text="nowhere") == []
    assert await ids(store, text="%") == []  # no pattern syntax: a percent sign is a percent sign


async def test_search_combines_with_owner_status_and_paging(store: Store) -> None:
    first = await make_run(store, "alice", input={"topic": "kelp forests"})
    await make_run(store, "bob", input={"topic": "kelp"})
    second = await make_run(store, "alice", input={"topic": "kelp"})
    await finish(store, second, RunStatus.SUCCEEDED, T0, 1)

    assert await ids(store, owner="alice", text="KELP") == [second.run_id, first.run_id]
    assert await ids(store, owner="alice", text="kelp", statuses=(RunStatus.RUNNING,)) == [first.run_id]
    assert await ids(store, owner="alice", text="kelp", limit=1, before=second.run_id) == [first.run_id]


async def test_since_and_until_keep_the_runs_created_in_between(store: Store) -> None:
    early = await make_run(store, at=T0)
    middle = await make_run(store, at=T0 + 60)
    late = await make_run(store, at=T0 + 120)

    assert await ids(store, since=T0 + 60) == [late.run_id, middle.run_id]  # since: inclusive
    assert await ids(store, until=T0 + 60) == [early.run_id]  # until: exclusive
    assert await ids(store, since=T0 + 1, until=T0 + 120) == [middle.run_id]


# -- each pipeline's health ----------------------------------------------------------


async def test_pipeline_stats_count_outcomes_durations_and_tokens_of_the_window(store: Store) -> None:
    window = T0 + 1000
    # before the window: not counted
    old = await make_run(store)
    await finish(store, old, RunStatus.FAILED, T0, 5)
    # in the window: research ran 1..10 s, nine succeeded, one failed, one cancelled
    for took in range(1, 11):
        run = await make_run(store, at=window)
        status = RunStatus.FAILED if took == 10 else RunStatus.SUCCEEDED
        usage = ({"model": "m1", "input_tokens": 100, "output_tokens": 10}, {"input_tokens": 1, "output_tokens": 2})
        await finish(store, run, status, window, took, usage=usage)
    cancelled = await make_run(store, at=window)
    await finish(store, cancelled, RunStatus.CANCELLED, window, 0.5)
    ticker = await make_run(store, "bob", pipeline="ticker", at=window)
    # bad token counts count as 0 (pricing.token_count); a timed-out run failed
    bad = ({"model": "m1", "input_tokens": -5, "output_tokens": "7"}, {"model": 3, "input_tokens": 1.5})
    await finish(store, ticker, RunStatus.TIMED_OUT, window, 2, usage=bad)
    await make_run(store, at=window)  # unfinished: not counted

    research, tick = await store.pipeline_stats(None, window)
    assert (research.pipeline, research.runs, research.succeeded, research.failed, research.cancelled) == (
        "research",
        11,
        9,
        1,
        1,
    )
    # nearest rank over 0.5, 1, 2, ..., 10 (11 durations): the 6th and the 11th
    assert (research.p50_s, research.p95_s) == (5.0, 10.0)
    assert research.tokens == {"m1": Tokens(1000, 100), "": Tokens(10, 20)}
    assert (tick.pipeline, tick.runs, tick.failed, tick.p50_s) == ("ticker", 1, 1, 2.0)
    assert tick.tokens == {"m1": Tokens(0, 0), "": Tokens(0, 0)}


async def test_pipeline_stats_of_one_owner_and_of_an_empty_window(store: Store) -> None:
    mine = await make_run(store, "alice", pipeline="ticker")
    theirs = await make_run(store, "bob", pipeline="chat")
    await finish(store, mine, RunStatus.SUCCEEDED, T0, 1)
    await finish(store, theirs, RunStatus.SUCCEEDED, T0, 1)

    assert [s.pipeline for s in await store.pipeline_stats("alice", T0)] == ["ticker"]
    assert [s.pipeline for s in await store.pipeline_stats(None, T0)] == ["chat", "ticker"]
    assert await store.pipeline_stats(None, T0 + 10) == []
