"""RUNYARD_RATE_LIMIT: run creations per owner, 429 rate_limited with Retry-After above it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from runyard.errors import ConfigurationError
from runyard.governance.admission import CreationRate
from tests.support import free_port, make_app, serve_in_thread

TICK = {"pipeline": "ticker", "input": {"marker": "rate", "count": 0}}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve_in_thread(make_app(store="memory://", rate_limit="3/minute")) as url:
        yield url


def create(server: str, owner: str, body: object = TICK) -> httpx.Response:
    return httpx.post(f"{server}/v1/runs", json=body, headers={"X-Client-Id": owner}, timeout=10)


def test_creations_over_the_rate_are_429_with_retry_after_and_create_nothing(server: str) -> None:
    assert [create(server, "busy").status_code for _ in range(3)] == [201, 201, 201]
    refused = create(server, "busy")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    listed = httpx.get(f"{server}/v1/runs", headers={"X-Client-Id": "busy"}).json()["runs"]
    assert len(listed) == 3


def test_the_rate_is_per_owner(server: str) -> None:
    for _ in range(3):
        create(server, "first")
    assert create(server, "first").status_code == 429
    assert create(server, "second").status_code == 201


def test_requests_refused_before_creation_do_not_count(server: str) -> None:
    bad = {"pipeline": "ticker", "input": {"marker": "x", "count": -1}}
    assert [create(server, "careful", bad).status_code for _ in range(5)] == [422] * 5
    assert create(server, "careful").status_code == 201


async def test_a_rate_that_cannot_be_read_fails_at_start_up() -> None:
    with pytest.raises(ConfigurationError):
        async with make_app(store="memory://", rate_limit="lots").running():
            pass


async def test_an_unreachable_redis_lets_creations_through_rather_than_stopping_everyone() -> None:
    rate = CreationRate("1/minute", f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    for _ in range(3):
        await rate.admit("anyone")
