"""The store contract of the long-term store (issue 13, ``ItemStore``), every backend:
items by owner, namespace and key; what replacing keeps; expiry; prefixes.

Runs once per URL in ``tests/conftest.py::STORE_URLS``."""

from __future__ import annotations

from typing import Any

import pytest

from runyard.store import Store
from runyard.store.items import Item
from tests.conftest import STORE_URLS

pytestmark = pytest.mark.parametrize("store_url", STORE_URLS, indirect=True)

T0 = 1_700_000_000.0


def item(
    namespace: tuple[str, ...] = ("users", "u1"),
    key: str = "k",
    *,
    owner: str = "alice",
    value: dict[str, Any] | None = None,
    at: float = T0,
    expires_at: float | None = None,
    embedding: list[float] | None = None,
) -> Item:
    return Item(owner, namespace, key, value or {"text": "hello"}, at, at, expires_at, embedding)


async def test_an_item_put_is_read_back_whole(store: Store) -> None:
    stored = await store.put_item(item(value={"text": "tea", "n": 1.5, "tags": ["a"]}, embedding=[0.25, -1.0]))

    assert await store.get_item("alice", ("users", "u1"), "k", T0) == stored
    assert stored.value == {"text": "tea", "n": 1.5, "tags": ["a"]}
    assert stored.embedding == [0.25, -1.0]
    assert (stored.created_at, stored.updated_at, stored.expires_at) == (T0, T0, None)


async def test_replacing_an_item_keeps_when_it_was_created(store: Store) -> None:
    await store.put_item(item(value={"v": 1}))
    replaced = await store.put_item(item(value={"v": 2}, at=T0 + 5))

    assert (replaced.value, replaced.created_at, replaced.updated_at) == ({"v": 2}, T0, T0 + 5)
    assert await store.get_item("alice", ("users", "u1"), "k", T0 + 6) == replaced


async def test_an_item_is_its_owners_alone(store: Store) -> None:
    await store.put_item(item(value={"who": "alice"}))
    await store.put_item(item(owner="bob", value={"who": "bob"}, at=T0 + 1))

    alice = await store.get_item("alice", ("users", "u1"), "k", T0 + 2)
    assert alice is not None and alice.value == {"who": "alice"}
    await store.delete_item("bob", ("users", "u1"), "k")
    assert await store.get_item("alice", ("users", "u1"), "k", T0 + 2) is not None
    assert [i.owner for i in await store.list_items("alice", (), T0 + 2)] == ["alice"]
    assert await store.item_namespaces("bob", (), T0 + 2) == []


async def test_a_deleted_item_is_gone(store: Store) -> None:
    await store.put_item(item())
    await store.delete_item("alice", ("users", "u1"), "k")
    await store.delete_item("alice", ("users", "u1"), "k")  # deleting nothing is not an error

    assert await store.get_item("alice", ("users", "u1"), "k", T0) is None


async def test_an_expired_item_is_invisible_at_once_then_swept(store: Store) -> None:
    await store.put_item(item(key="brief", expires_at=T0 + 10))
    await store.put_item(item(key="kept"))

    assert await store.get_item("alice", ("users", "u1"), "brief", T0 + 9.9) is not None
    assert await store.get_item("alice", ("users", "u1"), "brief", T0 + 10) is None
    assert [i.key for i in await store.list_items("alice", (), T0 + 10)] == ["kept"]
    assert await store.sweep_items(T0 + 10) == 1
    assert await store.sweep_items(T0 + 10) == 0
    assert await store.get_item("alice", ("users", "u1"), "kept", T0 + 10) is not None


async def test_an_item_replacing_an_expired_one_is_created_anew(store: Store) -> None:
    await store.put_item(item(expires_at=T0 + 1))
    again = await store.put_item(item(at=T0 + 2))

    assert (again.created_at, again.expires_at) == (T0 + 2, None)


async def test_items_under_a_prefix_are_listed_last_updated_first(store: Store) -> None:
    await store.put_item(item(("a",), "1", at=T0))
    await store.put_item(item(("a", "b"), "2", at=T0 + 1))
    await store.put_item(item(("a", "b", "c"), "3", at=T0 + 2))
    await store.put_item(item(("ab",), "4", at=T0 + 3))  # shares the text "a", not the part
    await store.put_item(item(("a_",), "5", at=T0 + 4))  # "_" is no wildcard

    keys = [i.key for i in await store.list_items("alice", ("a",), T0 + 5)]
    assert keys == ["3", "2", "1"]
    assert [i.key for i in await store.list_items("alice", ("a", "b"), T0 + 5)] == ["3", "2"]
    assert [i.key for i in await store.list_items("alice", (), T0 + 5)] == ["5", "4", "3", "2", "1"]


async def test_namespaces_are_listed_once_each_sorted(store: Store) -> None:
    for namespace, key in [(("b", "x"), "1"), (("a",), "1"), (("a",), "2"), (("a", "z"), "1")]:
        await store.put_item(item(namespace, key))
    await store.put_item(item(("gone",), "1", expires_at=T0 + 1))

    assert await store.item_namespaces("alice", (), T0 + 1) == [("a",), ("a", "z"), ("b", "x")]
    assert await store.item_namespaces("alice", ("a",), T0 + 1) == [("a",), ("a", "z")]
