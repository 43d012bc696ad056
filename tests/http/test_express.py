"""The express lane (``runyard.http.express``): the plain ``POST /v1/runs`` and
``GET /v1/runs/{run_id}/stream`` are answered without FastAPI; everything else
reaches FastAPI as it came, and both ways answer alike."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from runyard.http import create_http_app
from runyard.http.express import ExpressLane
from runyard.observability.metrics import REGISTRY
from runyard.runtime import Runtime
from tests.http.conftest import NewClient
from tests.http.helpers import Block, assert_error, sse_events, wait_finished
from tests.support import make_app

TICKER = {"pipeline": "ticker", "input": {"marker": "m", "count": 2}}
TICKER_BYTES = json.dumps(TICKER).encode()
PER_RUN = {"run_id", "session_id", "created_at", "trace_id"}


class FastAPIStandIn:
    """Where the lane hands requests on: records each with the body it read."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.requests.append((scope["method"], scope["path"], body))
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
async def http() -> AsyncIterator[FastAPI]:
    app = create_http_app(make_app(store="memory://", drain_s=0.2))
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
def stand_in() -> FastAPIStandIn:
    return FastAPIStandIn()


@pytest.fixture
async def lane(http: FastAPI, stand_in: FastAPIStandIn) -> AsyncIterator[httpx.AsyncClient]:
    express = ExpressLane(stand_in)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = http  # as Starlette's application sets it before any middleware
        await express(scope, receive, send)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://runyard") as client:
        yield client


async def test_a_plain_creation_is_answered_by_the_lane(lane: httpx.AsyncClient, stand_in: FastAPIStandIn) -> None:
    response = await lane.post("/v1/runs", json=TICKER)

    assert response.status_code == 201, response.text
    run = response.json()
    assert response.headers["location"] == f"/v1/runs/{run['run_id']}"
    assert (run["pipeline"], run["status"], run["input"]["count"]) == ("ticker", "queued", 2)
    assert stand_in.requests == []


async def test_a_plain_stream_is_answered_by_the_lane(lane: httpx.AsyncClient, stand_in: FastAPIStandIn) -> None:
    run_id = (await lane.post("/v1/runs", json=TICKER)).json()["run_id"]

    response = await lane.get(f"/v1/runs/{run_id}/stream")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    types = [block.event()["type"] for block in sse_events(response)]
    assert (types[0], types.count("tick"), types[-1]) == ("status", 2, "end")
    assert stand_in.requests == []


async def test_the_lane_resumes_from_last_event_id(lane: httpx.AsyncClient) -> None:
    run_id = (await lane.post("/v1/runs", json=TICKER)).json()["run_id"]
    whole = [block.event()["seq"] for block in sse_events(await lane.get(f"/v1/runs/{run_id}/stream"))]

    response = await lane.get(f"/v1/runs/{run_id}/stream", headers={"Last-Event-ID": "2"})

    assert [block.event()["seq"] for block in sse_events(response)] == whole[2:]


async def test_the_lane_answers_runyard_errors_in_the_envelope(lane: httpx.AsyncClient) -> None:
    unknown_pipeline = {"pipeline": "no_such_pipeline", "input": {}}
    assert_error(await lane.post("/v1/runs", json=unknown_pipeline), 404, "pipeline_not_found")
    assert_error(await lane.get("/v1/runs/run_unknown/stream"), 404, "run_not_found")
    run_id = (await lane.post("/v1/runs", json=TICKER)).json()["run_id"]
    assert_error(await lane.get(f"/v1/runs/{run_id}/stream", headers={"Last-Event-ID": "x"}), 400, "invalid_cursor")


@pytest.mark.parametrize(
    ("method", "path", "content", "headers"),
    [
        pytest.param("POST", "/v1/runs", b"{not json", {}, id="a body that is not JSON"),
        pytest.param("POST", "/v1/runs", b'{"pipeline": "ticker"}', {}, id="a body that is not a run request"),
        pytest.param("POST", "/v1/runs", b"[1, 2]", {}, id="a body that is not an object"),
        pytest.param("POST", "/v1/runs", TICKER_BYTES, {"Idempotency-Key": "k"}, id="an idempotency key"),
        pytest.param("POST", "/v1/runs?via=fastapi", TICKER_BYTES, {}, id="a query string"),
        pytest.param("POST", "/v1/runs/", TICKER_BYTES, {}, id="another path"),
        pytest.param("PUT", "/v1/runs", TICKER_BYTES, {}, id="another method"),
        pytest.param("GET", "/v1/runs/run_x/stream?after=1", b"", {}, id="a stream's query string"),
        pytest.param("HEAD", "/v1/runs/run_x/stream", b"", {}, id="a stream's HEAD"),
        pytest.param("GET", "/v1/runs/run_x/events", b"", {}, id="a run's events"),
    ],
)
async def test_anything_but_the_plain_shape_reaches_fastapi_with_its_body(
    lane: httpx.AsyncClient,
    stand_in: FastAPIStandIn,
    method: str,
    path: str,
    content: bytes,
    headers: dict[str, str],
) -> None:
    response = await lane.request(method, path, content=content, headers=headers)

    assert response.status_code == 418
    ((got_method, _, body),) = stand_in.requests
    assert (got_method, body) == (method, content)


async def test_a_body_of_unknown_length_reaches_fastapi(lane: httpx.AsyncClient, stand_in: FastAPIStandIn) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield TICKER_BYTES

    response = await lane.post("/v1/runs", content=chunks())

    assert response.status_code == 418
    assert stand_in.requests[0][2] == TICKER_BYTES


def _comparable(response: httpx.Response) -> tuple[int, Any, list[str]]:
    body = response.json() if response.headers["content-type"].startswith("application/json") else None
    if isinstance(body, dict) and "run_id" in body:
        body = {key: value for key, value in body.items() if key not in PER_RUN}
    ignored = {"date", "location", "x-request-id", "content-length"}
    return response.status_code, body, sorted(key for key in response.headers if key not in ignored)


@pytest.mark.server
@pytest.mark.parametrize(
    "body",
    [
        pytest.param(TICKER, id="a run"),
        pytest.param({**TICKER, "metadata": {"k": "v"}, "timeout_s": 30}, id="a run with fields"),
        pytest.param({"pipeline": "no_such_pipeline", "input": {}}, id="an unknown pipeline"),
        pytest.param({"pipeline": "ticker", "input": {"count": "many"}}, id="an input its schema refuses"),
    ],
)
def test_the_lane_and_fastapi_create_alike(server: str, new_client: NewClient, body: dict[str, Any]) -> None:
    client = new_client(server)

    through_lane = client.post("/v1/runs", json=body)
    through_fastapi = client.post("/v1/runs", params={"via": "fastapi"}, json=body)

    assert _comparable(through_lane) == _comparable(through_fastapi)


@pytest.mark.server
@pytest.mark.parametrize(
    "last_event_id", [pytest.param(None, id="from the start"), "2", pytest.param("99", id="past its end"), "x"]
)
def test_the_lane_and_fastapi_stream_alike(server: str, new_client: NewClient, last_event_id: str | None) -> None:
    client = new_client(server)
    run_id = client.post("/v1/runs", json=TICKER).json()["run_id"]
    wait_finished(client, run_id)  # both read the same run: a running one's last seq moves between them
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}

    through_lane = client.get(f"/v1/runs/{run_id}/stream", headers=headers)
    through_fastapi = client.get(f"/v1/runs/{run_id}/stream", params={"via": "fastapi"}, headers=headers)

    assert through_lane.status_code == through_fastapi.status_code
    assert through_lane.headers.get("content-type") == through_fastapi.headers.get("content-type")
    if through_lane.status_code == 200:
        assert _events(through_lane) == _events(through_fastapi)
    else:
        assert through_lane.json() == through_fastapi.json()


def _events(response: httpx.Response) -> list[tuple[int, str, Any]]:
    return [(event["seq"], event["type"], event["data"]) for event in map(Block.event, sse_events(response))]


@pytest.mark.server
def test_requests_through_the_lane_are_counted_by_route(server: str, new_client: NewClient) -> None:
    client = new_client(server)

    def counted(route: str, status: int) -> float:
        line = f'runyard_http_requests_total{{route="{route}",status="{status}"}} '
        found = [row for row in client.get("/metrics").text.splitlines() if row.startswith(line)]
        return float(found[0].rsplit(" ", 1)[1]) if found else 0.0

    creations, streams = counted("/v1/runs", 201), counted("/v1/runs/{run_id}/stream", 200)
    run_id = client.post("/v1/runs", json=TICKER).json()["run_id"]
    client.get(f"/v1/runs/{run_id}/stream")

    assert counted("/v1/runs", 201) == creations + 1
    assert counted("/v1/runs/{run_id}/stream", 200) == streams + 1


async def test_an_unexpected_error_is_a_500_in_the_envelope_with_its_request_id_both_ways(
    http: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lane answers above FastAPI's error handler, FastAPI beneath runyard's
    own layers: an exception no handler takes is 500 ``internal_error`` either
    way, echoing its request's id and counted like any answer."""

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    def failed_creations() -> float:
        return REGISTRY.get_sample_value("runyard_http_requests_total", {"route": "/v1/runs", "status": "500"}) or 0.0

    monkeypatch.setattr(Runtime, "create_run", broken)
    transport = httpx.ASGITransport(app=http, raise_app_exceptions=False)  # FastAPI's handler re-raises
    async with httpx.AsyncClient(transport=transport, base_url="http://runyard") as client:
        for params in ({}, {"via": "fastapi"}):
            counted = failed_creations()
            response = await client.post("/v1/runs", params=params, json=TICKER, headers={"X-Request-ID": "req-1"})

            assert_error(response, 500, "internal_error")
            assert response.headers["x-request-id"] == "req-1"
            assert failed_creations() == counted + 1
