"""Workers claim only the pipelines they serve (issue 10: rolling deploys failed
runs), on a PostgreSQL store shared as a deployment shares it: a run no live
worker serves waits, queued, and ``/readyz`` names its pipeline."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from runyard import RunStatus, Runyard
from runyard.models import Run
from runyard.runtime import Runtime
from tests.services import redis_url, require_redis
from tests.support import make_app

pytestmark = pytest.mark.postgres


def app_without(pipeline: str | None, **settings: Any) -> Runyard:
    """The test app, as a version that lacks ``pipeline`` (an older one, or another app)."""
    app = make_app(**settings)
    if pipeline is not None:
        del app.pipelines[pipeline]
    return app


@pytest.fixture
def deployment(postgres_url: str) -> dict[str, Any]:
    """Settings of processes sharing one PostgreSQL database and one Redis prefix."""
    require_redis()
    return {"store": postgres_url, "broker": redis_url(f"served-{secrets.token_hex(4)}"), "lease_s": 2}


async def settled(rt: Runtime, owner: str, run: Run) -> Run:
    done = await rt.wait(run, 30)
    assert done is not None, f"run {run.run_id} did not finish"
    return done


async def readyz(app: Runyard) -> dict[str, Any]:
    """``/readyz``'s body; ``/metrics`` must say the same of the unserved pipelines."""
    transport = httpx.ASGITransport(app=app.http())
    async with httpx.AsyncClient(transport=transport, base_url="http://runyard") as client:
        response = await client.get("/readyz")
        metrics = (await client.get("/metrics")).text
    assert response.status_code == 200  # a pipeline without a worker never makes the API unready
    body: dict[str, Any] = response.json()
    gauges = re.findall(r'^runyard_unserved_runs\{pipeline="(\w+)"\} (\S+)$', metrics, re.MULTILINE)
    assert {name: int(float(value)) for name, value in gauges} == body["unserved"]
    return body


@contextlib.asynccontextmanager
async def running(app: Runyard) -> AsyncIterator[Runtime]:
    async with app.running() as rt:
        yield rt


async def test_a_worker_leaves_a_pipeline_it_does_not_serve_queued_until_a_worker_that_serves_it_starts(
    deployment: dict[str, Any],
) -> None:
    """Regression: during a deploy adding a pipeline, old workers claimed its first
    runs and failed them ``pipeline_not_found`` ("not served here")."""
    api = app_without(None, role="api", **deployment)
    old_worker = app_without("nap", role="worker", **deployment)
    async with running(api) as front, running(old_worker):
        added = await front.create_run("alice", "nap", {"seconds": 0.01})
        later = await front.create_run("bob", "ticker", {"marker": "after", "count": 1})
        # the old worker took the later run: it has looked at the queue since `added` was queued
        assert (await settled(front, "bob", later)).status is RunStatus.SUCCEEDED
        waiting = await front.get_run("alice", added.run_id)
        assert (waiting.status, waiting.last_seq, waiting.error) == (RunStatus.QUEUED, 0, None)
        assert (await readyz(api))["unserved"] == {"nap": 1}

        async with running(app_without(None, role="worker", **deployment)):
            assert (await settled(front, "alice", added)).status is RunStatus.SUCCEEDED
            assert (await readyz(api))["unserved"] == {}
        # the new worker stopped cleanly: it serves nothing any more, at once
        await front.create_run("alice", "nap", {"seconds": 0.01})
        assert (await readyz(api))["unserved"] == {"nap": 1}


async def test_two_apps_with_different_pipelines_on_one_store_never_fail_each_others_runs(
    postgres_url: str,
) -> None:
    """Regression: two apps started on one database (the README's example beside the
    demo) claimed each other's runs and failed them: 8 of 72 demo runs."""
    first = app_without("nap_retry", store=postgres_url)  # serves nap, not nap_retry
    second = app_without("nap", store=postgres_url)  # serves nap_retry, not nap
    async with running(first) as a, running(second) as b:
        naps = [await a.create_run(f"o{i}", "nap", {"seconds": 0.01}) for i in range(12)]
        retries = [await b.create_run(f"o{i}", "nap_retry", {"seconds": 0.01}) for i in range(12)]
        ends = await asyncio.gather(*(settled(a, r.owner, r) for r in naps), *(settled(b, r.owner, r) for r in retries))
    assert [(r.status, r.error) for r in ends] == [(RunStatus.SUCCEEDED, None)] * 24
