"""The clients' long-term store methods, against a real server: both clients
speak ``/v1/store`` alike (namespaces as lists of parts)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from runyard.client import APIError, AsyncClient, Client
from tests.support import make_app, serve_in_thread


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve_in_thread(make_app(store="memory://", drain_s=0.2)) as url:
        yield url


def owner() -> str:
    return f"t-{uuid.uuid4().hex}"


def test_the_blocking_client_puts_reads_searches_lists_and_deletes(server: str) -> None:
    with Client(server, client_id=owner()) as client:
        put = client.put_item(["users", "u1"], "prefs", {"theme": "dark"}, ttl_s=60)
        client.put_item(["users", "u2"], "prefs", {"theme": "light"})

        assert client.get_item(["users", "u1"], "prefs") == put
        assert [i["key"] for i in client.search_items(["users"], filter={"theme": "dark"})] == ["prefs"]
        found = client.search_items(["users"], query="light")
        assert [(i["namespace"], i["score"]) for i in found] == [(["users", "u2"], 1.0)]
        assert client.list_namespaces(["users"], max_depth=2) == [["users", "u1"], ["users", "u2"]]
        client.delete_item(["users", "u1"], "prefs")
        with pytest.raises(APIError) as missing:
            client.get_item(["users", "u1"], "prefs")
        assert (missing.value.status, missing.value.code) == (404, "item_not_found")


async def test_the_async_client_does_the_same(server: str) -> None:
    async with AsyncClient(server, client_id=owner()) as client:
        put = await client.put_item(["notes"], "k", {"text": "tea at five"})

        assert await client.get_item(["notes"], "k") == put
        assert [i["key"] for i in await client.search_items(query="tea", limit=5)] == ["k"]
        assert await client.list_namespaces() == [["notes"]]
        await client.delete_item(["notes"], "k")
        assert await client.search_items(["notes"]) == []
