"""The long-term store as the runtime offers it (``/v1/store`` and ``ctx.store``
call this), on every store: items per owner, timestamps, expiry, filters,
ranking by words and by meaning, namespaces, and the limits, which refuse a
wrong item whole."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from runyard import Runyard, Settings
from runyard.context import RunContext
from runyard.errors import EmbeddingFailed, InvalidRequest, ItemNotFound, PayloadTooLarge
from runyard.longterm import LongTerm, item_json
from runyard.runtime import Runtime
from tests.conftest import STORE_URLS

pytestmark = pytest.mark.parametrize("store_url", STORE_URLS, indirect=True)

# What a word means, for the fake embedder: one axis per topic
TOPICS = {
    "pizza": 0,
    "pasta": 0,
    "hungry": 0,
    "dinner": 0,
    "rain": 1,
    "umbrella": 1,
    "sunny": 1,
    "guitar": 2,
    "song": 2,
}


def fake_embed(texts: list[str]) -> list[list[float]]:
    """Deterministic meaning: how many words of each topic a text holds."""
    vectors = []
    for text in texts:
        vector = [0.0, 0.0, 0.0]
        for word in text.lower().split():
            if word in TOPICS:
                vector[TOPICS[word]] += 1.0
        vectors.append(vector)
    return vectors


def build_app(store_url: str, store_embed: Any = None) -> Runyard:
    app = Runyard(Settings(store=store_url), store_embed=store_embed)  # type: ignore[call-arg]

    @app.pipeline("remember")
    async def remember(ctx: RunContext, input: dict[str, Any]) -> dict[str, Any]:
        await ctx.store.put(["prefs", "food"], "likes", {"text": input["likes"]})
        await ctx.store.put(["prefs", "food"], "scratch", {"text": "to go"})
        await ctx.store.delete(["prefs", "food"], "scratch")
        found = await ctx.store.search(["prefs"], query=input["likes"])
        return {
            "got": await ctx.store.get(["prefs", "food"], "likes"),
            "scratch": await ctx.store.get(["prefs", "food"], "scratch"),
            "found": [f["key"] for f in found],
        }

    return app


@pytest.fixture
async def rt(store_url: str) -> AsyncIterator[Runtime]:
    async with build_app(store_url).running() as runtime:
        yield runtime


@pytest.fixture
async def lt(rt: Runtime) -> LongTerm:
    return rt.longterm


async def test_an_item_put_is_read_back_with_its_times(lt: LongTerm) -> None:
    put = await lt.put("alice", ["users", "u1"], "prefs", {"theme": "dark"})
    got = await lt.get("alice", ["users", "u1"], "prefs")

    assert item_json(got) == item_json(put)
    assert item_json(got)["value"] == {"theme": "dark"}
    assert item_json(got)["namespace"] == ["users", "u1"]
    assert got.created_at == got.updated_at


async def test_an_update_keeps_created_at_and_moves_updated_at(lt: LongTerm) -> None:
    first = await lt.put("alice", ["users"], "k", {"v": 1})
    await asyncio.sleep(0.01)  # two puts at distinct times, to tell the stamps apart
    second = await lt.put("alice", ["users"], "k", {"v": 2})

    assert second.created_at == first.created_at
    assert second.updated_at > first.updated_at
    assert (await lt.get("alice", ["users"], "k")).value == {"v": 2}


async def test_a_deleted_item_is_not_found(lt: LongTerm) -> None:
    await lt.put("alice", ["users"], "k", {"v": 1})
    await lt.delete("alice", ["users"], "k")

    with pytest.raises(ItemNotFound):
        await lt.get("alice", ["users"], "k")
    await lt.delete("alice", ["users"], "k")  # deleting nothing is not an error


async def test_two_owners_keep_apart_items_under_the_same_namespace_and_key(lt: LongTerm) -> None:
    await lt.put("alice", ["notes"], "k", {"who": "alice"})
    await lt.put("bob", ["notes"], "k", {"who": "bob"})  # never overwrites alice's
    await lt.delete("bob", ["notes"], "k")

    assert (await lt.get("alice", ["notes"], "k")).value == {"who": "alice"}
    with pytest.raises(ItemNotFound):
        await lt.get("bob", ["notes"], "k")
    assert [f.item.owner for f in await lt.search("alice", ["notes"])] == ["alice"]
    assert await lt.search("carol", ["notes"]) == []
    assert await lt.namespaces("carol") == []


async def test_an_item_past_its_ttl_is_invisible_at_once_and_swept(lt: LongTerm) -> None:
    await lt.put("alice", ["cache"], "brief", {"v": 1}, ttl_s=1.0)
    await lt.put("alice", ["cache"], "kept", {"v": 2})
    assert (await lt.get("alice", ["cache"], "brief")).value == {"v": 1}
    await asyncio.sleep(1.05)  # the TTL is the time that passes: nothing to await but it

    with pytest.raises(ItemNotFound):
        await lt.get("alice", ["cache"], "brief")
    assert [f.item.key for f in await lt.search("alice", ["cache"])] == ["kept"]
    assert await lt.sweep() == 1
    assert (await lt.get("alice", ["cache"], "kept")).value == {"v": 2}


async def test_a_filter_keeps_items_whose_fields_are_equal(lt: LongTerm) -> None:
    await lt.put("alice", ["docs"], "a", {"kind": "recipe", "stars": 5, "done": True})
    await lt.put("alice", ["docs"], "b", {"kind": "recipe", "stars": 3})
    await lt.put("alice", ["docs", "old"], "c", {"kind": "recipe", "stars": 5, "done": 1})
    await lt.put("alice", ["other"], "d", {"kind": "recipe", "stars": 5})

    found = await lt.search("alice", ["docs"], filter={"kind": "recipe", "stars": 5})
    assert sorted(f.item.key for f in found) == ["a", "c"]
    assert [f.item.key for f in await lt.search("alice", ["docs"], filter={"done": True})] == ["a"]  # 1 is not true
    assert all(f.score is None for f in found)


async def test_a_search_pages_last_updated_first(lt: LongTerm) -> None:
    for key in "abcde":
        await lt.put("alice", ["log"], key, {"k": key})

    first = await lt.search("alice", ["log"], limit=2)
    rest = await lt.search("alice", ["log"], limit=10, offset=2)
    assert [f.item.key for f in first + rest] == ["e", "d", "c", "b", "a"]


async def test_a_query_without_embeddings_ranks_by_the_share_of_its_words_found(lt: LongTerm) -> None:
    await lt.put("alice", ["notes"], "n1", {"text": "Pizza on Friday", "tags": ["dinner"]})
    await lt.put("alice", ["notes"], "n2", {"text": "pizza dough recipe"})
    await lt.put("alice", ["notes"], "n3", {"text": "guitar lesson"})

    found = await lt.search("alice", ["notes"], query="friday PIZZA")
    assert [(f.item.key, f.score) for f in found] == [("n1", 1.0), ("n2", 0.5)]


async def test_namespaces_are_listed_under_a_prefix_cut_to_a_depth(lt: LongTerm) -> None:
    for namespace in (["users", "u1", "prefs"], ["users", "u1", "notes"], ["users", "u2"], ["teams", "t1"]):
        await lt.put("alice", namespace, "k", {"v": 1})
    await lt.put("bob", ["secret"], "k", {"v": 1})

    assert await lt.namespaces("alice") == [
        ("teams", "t1"),
        ("users", "u1", "notes"),
        ("users", "u1", "prefs"),
        ("users", "u2"),
    ]
    assert await lt.namespaces("alice", ["users"], max_depth=2) == [("users", "u1"), ("users", "u2")]
    assert await lt.namespaces("alice", max_depth=1) == [("teams",), ("users",)]


@pytest.mark.parametrize(
    ("namespace", "key", "value", "error"),
    [
        ([f"p{i}" for i in range(9)], "k", {"v": 1}, InvalidRequest),  # 9 parts
        (["a" * 65], "k", {"v": 1}, InvalidRequest),  # a 65-character part
        (["a.b"], "k", {"v": 1}, InvalidRequest),  # a dot would split the part
        ([], "k", {"v": 1}, InvalidRequest),
        (["ok"], "", {"v": 1}, InvalidRequest),
        (["ok"], "k", ["not", "an", "object"], InvalidRequest),
        (["ok"], "k", "text", InvalidRequest),
        (["ok"], "k", {"v": "x" * (1 << 20)}, PayloadTooLarge),  # over 1 MiB of JSON
    ],
)
async def test_an_item_over_the_limits_is_refused_and_nothing_is_written(
    lt: LongTerm, namespace: list[str], key: str, value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await lt.put("alice", namespace, key, value)

    assert await lt.namespaces("alice") == []


async def test_a_value_nested_too_deep_is_refused(lt: LongTerm) -> None:
    value: dict[str, Any] = {}
    for _ in range(200):
        value = {"v": value}
    with pytest.raises(InvalidRequest, match="nested"):
        await lt.put("alice", ["ok"], "k", value)


async def test_a_pipeline_reaches_its_owners_items_through_ctx_store(rt: Runtime) -> None:
    await rt.longterm.put("bob", ["prefs", "food"], "likes", {"text": "bob's, not alice's"})
    run = await rt.create_run("alice", "remember", {"likes": "sushi"})
    done = await rt.wait(run, 20)

    assert done is not None and done.output is not None
    assert done.output["got"]["value"] == {"text": "sushi"}
    assert done.output["scratch"] is None
    assert done.output["found"] == ["likes"]
    assert (await rt.longterm.get("bob", ["prefs", "food"], "likes")).value == {"text": "bob's, not alice's"}


async def test_with_an_embedding_function_a_query_ranks_by_meaning(store_url: str) -> None:
    async def embed(texts: list[str]) -> list[list[float]]:
        return fake_embed(texts)

    for store_embed in (embed, fake_embed):  # async and sync alike
        async with build_app(store_url, store_embed).running() as runtime:
            lt = runtime.longterm
            await lt.put("alice", ["notes"], "food", {"text": "pizza and pasta"})
            await lt.put("alice", ["notes"], "weather", {"text": "bring an umbrella"})
            await lt.put("alice", ["notes"], "music", {"text": "a new guitar song"})

            # no word in common with any item: food twice, weather once
            found = await lt.search("alice", ["notes"], query="hungry for dinner on a sunny day")
            assert [f.item.key for f in found] == ["food", "weather", "music"]
            assert [f.score for f in found] == pytest.approx([2 / 5**0.5, 1 / 5**0.5, 0.0])
            await lt.delete("alice", ["notes"], "food")
            await lt.delete("alice", ["notes"], "weather")
            await lt.delete("alice", ["notes"], "music")


async def test_an_embedding_function_that_fails_writes_nothing(store_url: str) -> None:
    def broken(texts: list[str]) -> list[list[float]]:
        raise RuntimeError("model offline")

    async with build_app(store_url, broken).running() as runtime:
        with pytest.raises(EmbeddingFailed, match="model offline"):
            await runtime.longterm.put("alice", ["notes"], "k", {"text": "x"})
        assert await runtime.longterm.namespaces("alice") == []
