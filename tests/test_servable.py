"""One depth rule for what is stored and served (``runyard.servable``): every value
a client or a pipeline submits is refused when it nests too deep to be served
later, and nothing already stored can make a read fail."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
import orjson
import pytest
from pydantic import BaseModel

from runyard import RunContext, RunStatus
from runyard.errors import InvalidRequest
from runyard.models import Run, Session
from runyard.runtime import Runtime
from runyard.servable import MAX_DEPTH, ORJSON_MAX_DEPTH, NestedTooDeep, check_depth
from runyard.store.base import RunQuery
from tests.support import make_app

SECRET = "s3cret-for-tests-only-0123456789abcdef"


def nested(depth: int, inner: Any = 1) -> Any:
    """``depth`` lists within one another around ``inner``."""
    value = inner
    for _ in range(depth):
        value = [value]
    return value


# -- the rule ------------------------------------------------------------------------


def test_orjson_still_refuses_one_level_past_the_limit_the_rule_is_computed_from() -> None:
    """The margin is computed from orjson's limit: if an upgrade moves it, this says so."""
    orjson.dumps(nested(ORJSON_MAX_DEPTH))
    with pytest.raises(orjson.JSONEncodeError, match="Recursion limit"):
        orjson.dumps(nested(ORJSON_MAX_DEPTH + 1))


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(nested(MAX_DEPTH), id="lists"),
        pytest.param({"a": {"b": nested(MAX_DEPTH - 2)}}, id="objects-and-lists"),
        pytest.param([{"i": i, "v": [i]} for i in range(1000)] + [nested(MAX_DEPTH - 1)], id="wide-then-deep"),
        pytest.param((1, (2, nested(MAX_DEPTH - 2))), id="tuples"),
        pytest.param("x" * 100_000, id="a-long-string"),
        pytest.param(None, id="null"),
    ],
)
def test_values_up_to_max_depth_pass(value: Any) -> None:
    check_depth(value, "it")


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(nested(MAX_DEPTH + 1), id="lists"),
        pytest.param({"a": {"b": nested(MAX_DEPTH - 1)}}, id="objects-and-lists"),
        pytest.param([{"i": i, "v": [i]} for i in range(1000)] + [nested(MAX_DEPTH)], id="wide-then-deep"),
        pytest.param(nested(ORJSON_MAX_DEPTH), id="what-orjson-still-encodes-alone"),
        pytest.param(nested(5000), id="far-past-orjson"),
        pytest.param([*range(1000), nested(300)], id="wide-then-past-orjson"),
    ],
)
def test_values_past_max_depth_are_refused_with_a_message_saying_why(value: Any) -> None:
    with pytest.raises(NestedTooDeep, match=f"the thing is nested more than {MAX_DEPTH} levels deep"):
        check_depth(value, "the thing")


def test_containers_orjson_knows_are_measured_too() -> None:
    @dataclasses.dataclass
    class Box:
        content: Any

    check_depth(Box(nested(MAX_DEPTH - 1)), "a box")
    with pytest.raises(NestedTooDeep):
        check_depth([Box(nested(MAX_DEPTH))], "a box in a list")


# -- pipelines -----------------------------------------------------------------------


class Holder(BaseModel):
    data: Any = None


@asynccontextmanager
async def served(**settings: Any) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    """The test app (plus pipelines that hand back deep values), started, and an HTTP
    client on it in process."""
    app = make_app(**{"store": "memory://", **settings})

    @app.pipeline("holder", input_model=Holder)
    async def holder(ctx: RunContext, input: Holder) -> Any:
        return input.data

    @app.pipeline("deep_output")
    async def deep_output(ctx: RunContext, input: Any) -> Any:
        return nested(input["depth"])

    @app.pipeline("deep_event")
    async def deep_event(ctx: RunContext, input: Any) -> Any:
        await ctx.emit("shallow", {"ok": True})
        await ctx.emit("deep", nested(input["depth"]))
        return "emitted"

    @app.pipeline("deep_memory")
    async def deep_memory(ctx: RunContext, input: Any) -> Any:
        await ctx.memory.append("user", nested(input["depth"]))
        return "remembered"

    @app.pipeline("deep_event_caught")
    async def deep_event_caught(ctx: RunContext, input: Any) -> Any:
        try:
            await ctx.emit("deep", nested(ORJSON_MAX_DEPTH))
        except ValueError as exc:
            return {"refused": str(exc)}
        return "accepted"

    async with app.running() as rt:
        transport = httpx.ASGITransport(app=app.http())
        async with httpx.AsyncClient(transport=transport, base_url="http://runyard") as client:
            yield rt, client


async def ended(rt: Runtime, pipeline: str, input: Any) -> Run:
    run = await rt.create_run("alice", pipeline, input)
    done = await rt.wait(run, 10)  # the lease is 30 s: a run left running would not end in time
    assert done is not None, f"{pipeline} did not end"
    return done


async def test_output_too_deep_fails_the_run_at_once() -> None:
    """Issue 10: output 254 deep encoded alone, then the ``end`` event wrapping it did not:
    the run stayed ``running`` until its lease ended, then ``worker_lost`` on a healthy worker."""
    async with served() as (rt, client):
        started = time.monotonic()
        done = await ended(rt, "deep_output", {"depth": ORJSON_MAX_DEPTH})
        assert time.monotonic() - started < 5
        assert done.status is RunStatus.FAILED and done.attempt == 1
        assert done.error is not None and done.error.code == "pipeline_error"
        assert f"the pipeline's output is nested more than {MAX_DEPTH} levels deep" in done.error.message
        events = (await client.get(f"/v1/runs/{done.run_id}/events", headers={"X-Client-Id": "alice"})).json()
        assert [event["type"] for event in events["events"]][-1] == "end"


async def test_output_as_deep_as_the_rule_allows_succeeds_and_is_served() -> None:
    async with served() as (rt, client):
        done = await ended(rt, "deep_output", {"depth": MAX_DEPTH})
        assert done.status is RunStatus.SUCCEEDED
        snapshot = await client.get(f"/v1/runs/{done.run_id}", headers={"X-Client-Id": "alice"})
        assert snapshot.status_code == 200 and snapshot.json()["output"] == nested(MAX_DEPTH)
        events = (await client.get(f"/v1/runs/{done.run_id}/events", headers={"X-Client-Id": "alice"})).json()
        assert events["events"][-1]["data"]["output"] == nested(MAX_DEPTH)


@pytest.mark.parametrize(
    ("pipeline", "what"),
    [("deep_event", "the data of event 'deep'"), ("deep_memory", "a memory message's content")],
)
async def test_event_data_or_memory_too_deep_fails_the_run_saying_why(pipeline: str, what: str) -> None:
    async with served() as (rt, client):
        done = await ended(rt, pipeline, {"depth": ORJSON_MAX_DEPTH})
        assert done.status is RunStatus.FAILED
        assert done.error is not None and done.error.code == "pipeline_error"
        assert f"{what} is nested more than {MAX_DEPTH} levels deep" in done.error.message
        session = await client.get(f"/v1/sessions/{done.session_id}", headers={"X-Client-Id": "alice"})
        assert session.status_code == 200 and session.json()["history"] == []


async def test_a_refused_emit_writes_nothing_and_the_pipeline_may_go_on() -> None:
    async with served() as (rt, _):
        done = await ended(rt, "deep_event_caught", None)
        assert done.status is RunStatus.SUCCEEDED
        assert "nested more than" in done.output["refused"]
        assert "deep" not in [event.type for event in await rt.store.read_events(done.run_id, 0, 100)]


async def test_pipeline_input_is_checked_for_every_front_end() -> None:
    """The check is in the pipeline's input validation, which every run creation passes."""
    async with served() as (rt, _):
        with pytest.raises(InvalidRequest, match=f"input is nested more than {MAX_DEPTH} levels deep"):
            await rt.create_run("alice", "whoami", nested(MAX_DEPTH + 1))
        with pytest.raises(InvalidRequest, match="nested more than"):
            await rt.create_run("alice", "holder", {"data": nested(MAX_DEPTH)})  # a model's dump, checked too
        assert await rt.store.list_runs(RunQuery("alice")) == []


# -- what was stored before the rule -------------------------------------------------


async def store_too_deep_run(rt: Runtime, owner: str) -> Run:
    """A run as an older runyard stored it: input and metadata 254 deep."""
    at = time.time()
    run = Run(
        run_id="run_olderthantherule0000000",
        session_id="ses_olderthantherule0000000",
        owner=owner,
        pipeline="whoami",
        status=RunStatus.FAILED,
        input=nested(ORJSON_MAX_DEPTH),
        created_at=at,
        metadata={"k": nested(ORJSON_MAX_DEPTH - 1)},
        finished_at=at,
    )
    await rt.store.create_run(run, Session(run.session_id, owner, at, at))
    return run


async def test_listing_stays_200_with_a_run_stored_before_the_rule() -> None:
    """Issue 10: every ``GET /v1/runs`` page holding such a run answered 500 for the
    whole retention period, the admin's listing of every owner included."""
    settings = {"auth": "jwt", "jwt_secret": SECRET, "admin_subjects": "root"}
    async with served(**settings) as (rt, client):
        run = await store_too_deep_run(rt, "carol")

        def as_(sub: str) -> dict[str, str]:
            token = jwt.encode({"sub": sub, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
            return {"Authorization": f"Bearer {token}"}

        own = await client.get("/v1/runs", headers=as_("carol"))
        assert own.status_code == 200, own.text
        assert [listed["input"] for listed in own.json()["runs"]] == [run.input]
        everyone = await client.get("/v1/runs", params={"owner": "*"}, headers=as_("root"))
        assert everyone.status_code == 200
        assert run.run_id in {listed["run_id"] for listed in everyone.json()["runs"]}
        snapshot = await client.get(f"/v1/runs/{run.run_id}", headers=as_("carol"))
        assert snapshot.status_code == 200 and snapshot.json()["metadata"] == run.metadata
