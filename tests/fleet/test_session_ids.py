"""Chosen session ids across API processes (issue 13): the store settles two
creations of one owner's id racing through two API processes, so exactly one
creates it. 20 racing pairs each, on PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from tests.fleet.conftest import Fleet
from tests.fleet.test_sessions import PAIRS, apis, clients_of, race
from tests.support import ServerProcess

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]
__all__ = ["apis"]  # the fixture, shared


async def racing_creations(first: httpx.AsyncClient, second: httpx.AsyncClient, if_exists: str) -> list[int]:
    body = {"session_id": f"thread:{uuid.uuid4().hex}", "if_exists": if_exists}
    answers = await asyncio.gather(first.post("/v1/sessions", json=body), second.post("/v1/sessions", json=body))
    for answer in answers:
        assert answer.json().get("session_id", body["session_id"]) == body["session_id"], answer.text
    refused = [a.json()["error"]["code"] for a in answers if a.status_code == 409]
    assert set(refused) <= {"session_exists"}, [a.text for a in answers]
    return sorted(a.status_code for a in answers)


@pytest.mark.parametrize(("if_exists", "outcome"), [("raise", [201, 409]), ("do_nothing", [200, 201])])
def test_one_owners_id_created_through_two_api_processes_at_once_is_created_once(
    fleet: Fleet, apis: list[ServerProcess], if_exists: str, outcome: list[int]
) -> None:
    outcomes: list[list[int]] = []

    async def main() -> None:
        async with clients_of(apis) as (first, second):

            async def trial() -> None:
                outcomes.append(await racing_creations(first, second, if_exists))

            await race(PAIRS, trial)

    asyncio.run(main())
    assert outcomes == [outcome] * PAIRS
