"""The store contract of traces (issue 18), every backend: a run keeps the trace
context it was created with (``traceparent``, then ``tracestate``), through its
claim, so that a worker in any process continues the run's trace.

Runs once per URL in ``tests/conftest.py::STORE_URLS``, as ``test_contract.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from runyard.store import Store, store_from_url
from runyard.store.base import RunQuery
from tests.store.test_contract import SERVED, T0, created, run, session

CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\nvendor=opaque,other=1"


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    store = store_from_url(store_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_a_run_keeps_its_callers_trace_context_through_its_claim(store: Store) -> None:
    s = session()
    r = run(s.session_id, trace=CALLER)
    await store.create_run(r, s)
    stored = await store.get_run(r.run_id)
    assert stored is not None and stored.trace == CALLER
    assert stored.trace_id == "0af7651916cd43dd8448eb211c80319c"
    (claim,) = await store.claim("w1", 1, T0, T0 + 30, pipelines=SERVED)
    assert claim.run.trace == CALLER


async def test_a_run_without_a_caller_has_a_trace_of_its_own_in_its_listing(store: Store) -> None:
    first, second = await created(store, run("ses_a"), run("ses_b"))
    assert first.trace_id != second.trace_id
    listed = {r.run_id: r.trace_id for r in await store.list_runs(RunQuery(owner="alice"))}
    assert listed == {first.run_id: first.trace_id, second.run_id: second.trace_id}
    assert all(t is not None and len(t) == 32 and t == t.lower() and int(t, 16) for t in listed.values())
