"""``/v1/store``: the contract's "The store: long-term memory per owner", over
HTTP on each store's server (each test is its own owner)."""

from __future__ import annotations

import httpx
import pytest

from tests.http.conftest import NewClient


@pytest.fixture
def me(any_server: str, new_client: NewClient) -> httpx.Client:
    return new_client(any_server)


@pytest.fixture
def them(any_server: str, new_client: NewClient) -> httpx.Client:
    return new_client(any_server)


def put(client: httpx.Client, namespace: list[str], key: str, value: object, **extra: object) -> httpx.Response:
    return client.put("/v1/store/items", json={"namespace": namespace, "key": key, "value": value, **extra})


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


def test_an_item_is_put_then_read_by_its_dotted_namespace(me: httpx.Client) -> None:
    answer = put(me, ["users", "u1"], "prefs", {"theme": "dark"})
    assert answer.status_code == 200
    item = answer.json()
    assert set(item) == {"namespace", "key", "value", "created_at", "updated_at"}
    assert (item["namespace"], item["key"], item["value"]) == (["users", "u1"], "prefs", {"theme": "dark"})
    assert item["created_at"] == item["updated_at"]

    got = me.get("/v1/store/items", params={"namespace": "users.u1", "key": "prefs"})
    assert (got.status_code, got.json()) == (200, item)


def test_another_owners_item_is_not_found_and_never_overwritten(me: httpx.Client, them: httpx.Client) -> None:
    put(me, ["notes"], "k", {"who": "me"})
    assert put(them, ["notes"], "k", {"who": "them"}).status_code == 200
    assert them.request("DELETE", "/v1/store/items", json={"namespace": ["notes"], "key": "k"}).status_code == 204

    missing = them.get("/v1/store/items", params={"namespace": "notes", "key": "k"})
    assert (missing.status_code, error_code(missing)) == (404, "item_not_found")
    assert me.get("/v1/store/items", params={"namespace": "notes", "key": "k"}).json()["value"] == {"who": "me"}
    assert them.post("/v1/store/items/search", json={"namespace_prefix": ["notes"]}).json() == {"items": []}


def test_a_deleted_item_answers_404(me: httpx.Client) -> None:
    put(me, ["notes"], "k", {"v": 1})
    assert me.request("DELETE", "/v1/store/items", json={"namespace": ["notes"], "key": "k"}).status_code == 204

    gone = me.get("/v1/store/items", params={"namespace": "notes", "key": "k"})
    assert (gone.status_code, error_code(gone)) == (404, "item_not_found")


def test_a_search_filters_and_a_query_scores(me: httpx.Client) -> None:
    put(me, ["docs"], "a", {"kind": "recipe", "text": "pizza dough"})
    put(me, ["docs", "x"], "b", {"kind": "recipe", "text": "pasta"})
    put(me, ["docs"], "c", {"kind": "note", "text": "pizza party"})

    filtered = me.post("/v1/store/items/search", json={"namespace_prefix": ["docs"], "filter": {"kind": "recipe"}})
    assert [i["key"] for i in filtered.json()["items"]] == ["b", "a"]
    assert all("score" not in i for i in filtered.json()["items"])

    queried = me.post("/v1/store/items/search", json={"namespace_prefix": ["docs"], "query": "pizza", "limit": 1})
    assert [(i["key"], i["score"]) for i in queried.json()["items"]] == [("c", 1.0)]


def test_namespaces_are_listed_with_prefix_and_max_depth(me: httpx.Client) -> None:
    for namespace in (["users", "u1", "prefs"], ["users", "u2"], ["teams"]):
        put(me, namespace, "k", {"v": 1})

    everything = me.post("/v1/store/namespaces")
    assert everything.json() == {"namespaces": [["teams"], ["users", "u1", "prefs"], ["users", "u2"]]}
    cut = me.post("/v1/store/namespaces", json={"prefix": ["users"], "max_depth": 2})
    assert cut.json() == {"namespaces": [["users", "u1"], ["users", "u2"]]}


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"namespace": [f"p{i}" for i in range(9)], "key": "k", "value": {}}, 422, "invalid_request"),
        ({"namespace": ["a" * 65], "key": "k", "value": {}}, 422, "invalid_request"),
        ({"namespace": ["ok"], "key": "k", "value": [1, 2]}, 422, "invalid_request"),
        ({"namespace": ["ok"], "key": "k", "value": "text"}, 422, "invalid_request"),
        ({"namespace": ["ok"], "key": "k", "value": {}, "ttl_s": -1}, 422, "invalid_request"),
        ({"namespace": ["ok"], "key": "k", "value": {"v": "x" * (1 << 20)}}, 413, "payload_too_large"),
    ],
)
def test_a_put_over_the_limits_is_refused_clearly_and_writes_nothing(
    me: httpx.Client, body: dict[str, object], status: int, code: str
) -> None:
    answer = me.put("/v1/store/items", json=body)

    assert (answer.status_code, error_code(answer)) == (status, code)
    assert me.post("/v1/store/namespaces", json={}).json() == {"namespaces": []}


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        # as every route answers a query parameter missing or out of its schema
        ({"namespace": "a..b", "key": "k"}, 400, "invalid_query"),
        ({"namespace": ".".join(["p"] * 9), "key": "k"}, 400, "invalid_query"),
        ({"namespace": "a", "key": ""}, 400, "invalid_query"),
        ({"key": "k"}, 400, "invalid_query"),
    ],
)
def test_a_read_by_a_malformed_namespace_is_refused(
    me: httpx.Client, params: dict[str, str], status: int, code: str
) -> None:
    answer = me.get("/v1/store/items", params=params)

    assert (answer.status_code, error_code(answer)) == (status, code)


def test_a_search_with_a_bad_page_is_refused(me: httpx.Client) -> None:
    answer = me.post("/v1/store/items/search", json={"namespace_prefix": [], "limit": 0})

    assert (answer.status_code, error_code(answer)) == (422, "invalid_request")
