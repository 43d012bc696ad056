"""The Python clients' sessions: created under one's own id (``if_exists``), and
listed (paged, filtered on metadata), against a real server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from runyard.client import APIError, AsyncClient, Client
from tests.http.conftest import BASE_SETTINGS
from tests.support import make_app, serve_in_thread


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serve_in_thread(make_app(**BASE_SETTINGS)) as url:
        yield url


def test_the_blocking_client_creates_under_its_own_id_and_lists(url: str) -> None:
    owner = f"c-{uuid.uuid4().hex}"
    with Client(url, client_id=owner) as client:
        made = client.create_session({"lang": "fr"}, session_id="chat:1")
        assert made["session_id"] == "chat:1"
        with pytest.raises(APIError) as taken:
            client.create_session(session_id="chat:1")
        assert (taken.value.status, taken.value.code) == (409, "session_exists")
        again = client.create_session(session_id="chat:1", if_exists="do_nothing")
        assert again["metadata"] == {"lang": "fr"}
        client.create_session({"lang": "de"}, session_id="chat:2")
        first = client.list_sessions(limit=1)
        assert [s["session_id"] for s in first["sessions"]] == ["chat:2"]
        rest = client.list_sessions(limit=1, before=first["next"])
        assert [s["session_id"] for s in rest["sessions"]] == ["chat:1"]
        french = client.list_sessions(metadata={"lang": "fr"})
        assert [s["session_id"] for s in french["sessions"]] == ["chat:1"]


async def test_the_async_client_does_the_same(url: str) -> None:
    owner = f"c-{uuid.uuid4().hex}"
    async with AsyncClient(url, client_id=owner) as client:
        assert (await client.create_session(session_id="t.1"))["session_id"] == "t.1"
        assert (await client.create_session(session_id="t.1", if_exists="do_nothing"))["session_id"] == "t.1"
        listed = await client.list_sessions()
        assert [s["session_id"] for s in listed["sessions"]] == ["t.1"]
        assert listed["next"] is None
