"""RUNYARD_QUOTA_RUNS and Idempotency-Key on the run-creating routes.

A quota caps the runs an owner may ever create (429 ``quota_exceeded``); an
``Idempotency-Key`` repeated by its owner within 24 h returns the first run
(201, the same ``run_id``) and creates nothing, also when the requests race; the
same key with another body is 422 ``idempotency_key_reused``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.http.helpers import assert_error
from tests.sse_reader import read_events
from tests.support import make_app, serve_in_thread

TICK = {"pipeline": "ticker", "input": {"marker": "admit", "count": 2}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = tmp_path_factory.mktemp("admission") / "runs.db"
    with serve_in_thread(make_app(store=f"sqlite:///{db}", quota_runs=3)) as url:
        yield url


def post(server: str, owner: str, body: Any = TICK, key: str | None = None, path: str = "") -> httpx.Response:
    headers = {"X-Client-Id": owner, **({"Idempotency-Key": key} if key is not None else {})}
    return httpx.post(f"{server}/v1/runs{path}", json=body, headers=headers, timeout=10)


def runs_of(server: str, owner: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = httpx.get(f"{server}/v1/runs", headers={"X-Client-Id": owner}).json()["runs"]
    return listed


# -- quota ------------------------------------------------------------------------------


def test_an_owner_gets_exactly_its_quota_of_runs_then_429_quota_exceeded(server: str) -> None:
    assert [post(server, "q-owner").status_code for _ in range(3)] == [201, 201, 201]
    refused = post(server, "q-owner")
    assert_error(refused, 429, "quota_exceeded")
    assert len(runs_of(server, "q-owner")) == 3
    assert post(server, "q-other").status_code == 201  # per owner


def test_racing_creations_never_pass_the_quota(server: str) -> None:
    async def race() -> list[int]:
        async with httpx.AsyncClient(base_url=server, headers={"X-Client-Id": "q-racer"}) as client:
            answers = await asyncio.gather(*(client.post("/v1/runs", json=TICK) for _ in range(12)))
            return [answer.status_code for answer in answers]

    statuses = asyncio.run(race())
    assert sorted(statuses) == [201] * 3 + [429] * 9
    assert len(runs_of(server, "q-racer")) == 3


def test_requests_refused_before_creation_use_no_quota(server: str) -> None:
    bad = {"pipeline": "ticker", "input": {"marker": "x", "count": -1}}
    assert [post(server, "q-careful", bad).status_code for _ in range(4)] == [422] * 4
    assert post(server, "q-careful").status_code == 201


# -- idempotency keys -------------------------------------------------------------------


def test_a_repeated_key_returns_the_first_run_with_201_and_creates_nothing(server: str) -> None:
    first = post(server, "i-owner", key="order-17")
    again = post(server, "i-owner", key="order-17")
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json()["run_id"] == first.json()["run_id"]
    assert again.headers["location"] == first.headers["location"]
    assert [run["run_id"] for run in runs_of(server, "i-owner")] == [first.json()["run_id"]]


def test_a_repeat_uses_no_quota(server: str) -> None:
    for _ in range(5):
        assert post(server, "i-frugal", key="same").status_code == 201
    assert len(runs_of(server, "i-frugal")) == 1


def test_the_same_key_with_another_body_is_422_idempotency_key_reused(server: str) -> None:
    assert post(server, "i-mixer", key="k1").status_code == 201
    other = {"pipeline": "ticker", "input": {"marker": "different", "count": 2}}
    assert_error(post(server, "i-mixer", other, key="k1"), 422, "idempotency_key_reused")
    assert len(runs_of(server, "i-mixer")) == 1


def test_keys_are_per_owner(server: str) -> None:
    mine, theirs = post(server, "i-a", key="shared-key"), post(server, "i-b", key="shared-key")
    assert mine.json()["run_id"] != theirs.json()["run_id"]


def test_requests_racing_with_one_key_make_exactly_one_run(server: str) -> None:
    async def race() -> set[str]:
        async with httpx.AsyncClient(base_url=server, headers={"X-Client-Id": "i-racer"}) as client:
            answers = await asyncio.gather(
                *(client.post("/v1/runs", json=TICK, headers={"Idempotency-Key": "race"}) for _ in range(10))
            )
            assert {answer.status_code for answer in answers} == {201}
            return {answer.json()["run_id"] for answer in answers}

    assert len(asyncio.run(race())) == 1
    assert len(runs_of(server, "i-racer")) == 1


def test_a_repeat_on_the_streaming_route_streams_the_first_run(server: str) -> None:
    first = post(server, "i-streamer", key="s1")

    async def stream_again() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=server, headers={"X-Client-Id": "i-streamer"}) as client:
            body = {**TICK, "on_disconnect": "continue"}
            async with client.stream("POST", "/v1/runs/stream", json=body, headers={"Idempotency-Key": "s1"}) as r:
                assert r.headers["location"] == first.headers["location"]
            return await read_events(client, first.json()["run_id"])

    events = asyncio.run(stream_again())
    assert events[-1]["type"] == "end"
    assert len(runs_of(server, "i-streamer")) == 1


MALFORMED_KEYS = {"empty": b"", "too-long": b"x" * 256, "control": b"tab\there", "non-ascii": "naïve".encode()}


@pytest.mark.parametrize("key", MALFORMED_KEYS.values(), ids=MALFORMED_KEYS.keys())
def test_a_malformed_key_is_422_invalid_request_and_creates_nothing(server: str, key: bytes) -> None:
    headers = {"X-Client-Id": "i-bad", "Idempotency-Key": key}
    assert_error(httpx.post(f"{server}/v1/runs", json=TICK, headers=headers), 422, "invalid_request")
    assert runs_of(server, "i-bad") == []
