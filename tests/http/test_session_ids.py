"""Sessions under ids the client chooses, scoped per owner, and ``GET /v1/sessions``
(CONTRACT.md, second part, "Sessions as threads")."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from tests.http.conftest import NewClient, Serve
from tests.http.helpers import assert_error, create_run, list_runs, nap, wait_finished, wait_for_status

LISTED_FIELDS = {"session_id", "created_at", "last_activity", "status", "metadata"}


def chosen() -> str:
    """A thread id as a client makes one: it may hold ``.`` and ``:``."""
    return f"thread:{uuid.uuid4().hex[:8]}.v1"


def create(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post("/v1/sessions", json=body)


def remember(client: httpx.Client, session_id: str, note: str) -> dict[str, Any]:
    run = create_run(client, "remember", {"note": note}, session_id=session_id)
    done = wait_finished(client, run["run_id"])
    assert done["status"] == "succeeded", done
    return done


def listed(client: httpx.Client, **params: Any) -> dict[str, Any]:
    response = client.get("/v1/sessions", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def listed_ids(client: httpx.Client, **params: Any) -> list[str]:
    return [session["session_id"] for session in listed(client, **params)["sessions"]]


@pytest.fixture
def alice(any_server: str, new_client: NewClient) -> httpx.Client:
    return new_client(any_server)


@pytest.fixture
def bob(any_server: str, new_client: NewClient) -> httpx.Client:
    return new_client(any_server)


# -- creating under a chosen id ----------------------------------------------------------------


def test_a_chosen_id_is_the_sessions_id(alice: httpx.Client) -> None:
    session_id = chosen()
    response = create(alice, session_id=session_id, metadata={"user": "u1"})
    assert response.status_code == 201, response.text
    assert response.headers["Location"] == f"/v1/sessions/{session_id}"
    assert response.json()["session_id"] == session_id
    assert response.json()["metadata"] == {"user": "u1"}
    done = remember(alice, session_id, "hello")
    assert done["session_id"] == session_id
    assert alice.get(f"/v1/sessions/{session_id}").json()["history"][0]["content"] == "hello"


def test_a_taken_id_is_409_session_exists_by_default(alice: httpx.Client) -> None:
    session_id = chosen()
    assert create(alice, session_id=session_id).status_code == 201
    assert_error(create(alice, session_id=session_id), 409, "session_exists")
    assert_error(create(alice, session_id=session_id, if_exists="raise"), 409, "session_exists")


def test_do_nothing_answers_200_with_the_existing_session_unchanged(alice: httpx.Client) -> None:
    session_id = chosen()
    first = create(alice, session_id=session_id, metadata={"v": 1}).json()
    remember(alice, session_id, "kept")
    again = create(alice, session_id=session_id, if_exists="do_nothing", metadata={"v": 2})
    assert again.status_code == 200
    body = again.json()
    assert (body["session_id"], body["created_at"], body["metadata"]) == (session_id, first["created_at"], {"v": 1})
    assert [message["content"] for message in body["history"]] == ["kept"]


def test_do_nothing_creates_a_missing_session(alice: httpx.Client) -> None:
    session_id = chosen()
    response = create(alice, session_id=session_id, if_exists="do_nothing")
    assert response.status_code == 201
    assert response.json()["session_id"] == session_id


def test_a_deleted_sessions_id_can_be_used_again_and_starts_with_no_memory(alice: httpx.Client) -> None:
    session_id = chosen()
    create(alice, session_id=session_id)
    old = remember(alice, session_id, "forgotten")
    assert alice.delete(f"/v1/sessions/{session_id}").status_code == 204
    assert create(alice, session_id=session_id).status_code == 201
    assert alice.get(f"/v1/sessions/{session_id}").json()["history"] == []
    assert remember(alice, session_id, "new")["output"]["history"][0]["content"] == "new"
    assert alice.get(f"/v1/runs/{old['run_id']}").status_code == 200  # its runs stay readable


@pytest.mark.parametrize(
    "bad",
    ["", "a/b", "a b", "x" * 129, "ünïcode", "a?b", 7],
    ids=["empty", "slash", "space", "too-long", "non-ascii", "question-mark", "number"],
)
def test_an_invalid_id_is_422_and_creates_nothing(alice: httpx.Client, bad: Any) -> None:
    assert_error(create(alice, session_id=bad), 422, "invalid_request")
    assert listed_ids(alice) == []


def test_an_unknown_if_exists_is_422(alice: httpx.Client) -> None:
    assert_error(create(alice, session_id=chosen(), if_exists="replace"), 422, "invalid_request")
    assert listed_ids(alice) == []


def test_ids_of_the_servers_own_form_are_the_servers_to_make(alice: httpx.Client, bob: httpx.Client) -> None:
    made = create(alice).json()["session_id"]
    assert made.startswith("ses_")
    assert_error(create(alice, session_id=made), 409, "session_exists")
    assert create(alice, session_id=made, if_exists="do_nothing").status_code == 200
    # another owner asking for it learns nothing: the same answer as for an id nobody has
    assert_error(create(bob, session_id=made), 422, "invalid_request")
    assert_error(create(bob, session_id="ses_" + "0" * 24), 422, "invalid_request")


def test_a_run_in_an_unknown_chosen_id_is_404_and_makes_no_session(alice: httpx.Client) -> None:
    session_id = chosen()
    response = alice.post("/v1/runs", json={"pipeline": "whoami", "input": None, "session_id": session_id})
    assert_error(response, 404, "session_not_found")
    assert alice.get(f"/v1/sessions/{session_id}").status_code == 404


# -- scoped per owner --------------------------------------------------------------------------


def test_two_owners_with_one_id_have_two_sessions(alice: httpx.Client, bob: httpx.Client) -> None:
    session_id = chosen()
    assert create(alice, session_id=session_id, metadata={"who": "alice"}).status_code == 201
    assert bob.get(f"/v1/sessions/{session_id}").status_code == 404  # not bob's: missing to him
    assert create(bob, session_id=session_id, metadata={"who": "bob"}).status_code == 201
    a = remember(alice, session_id, "alice's note")
    b = remember(bob, session_id, "bob's note")
    assert a["session_id"] == b["session_id"] == session_id
    for client, note, who in ((alice, "alice's note", "alice"), (bob, "bob's note", "bob")):
        session = client.get(f"/v1/sessions/{session_id}").json()
        assert [m["content"] for m in session["history"]] == [note]
        assert session["metadata"] == {"who": who}
        assert [run["run_id"] for run in list_runs(client, session_id=session_id)] == [
            (a if client is alice else b)["run_id"]
        ]
    assert alice.get(f"/v1/runs/{b['run_id']}").status_code == 404


def test_an_owners_run_sees_the_id_it_chose(alice: httpx.Client) -> None:
    session_id = chosen()
    create(alice, session_id=session_id)
    run = create_run(alice, "whoami", None, session_id=session_id)
    assert wait_finished(alice, run["run_id"])["output"]["session_id"] == session_id


def test_a_conflict_never_tells_of_another_owners_session(alice: httpx.Client, bob: httpx.Client) -> None:
    session_id = chosen()
    create(alice, session_id=session_id)
    assert create(bob, session_id=session_id).status_code == 201  # his own, not a 409
    assert_error(create(bob, session_id=session_id), 409, "session_exists")  # about his own


def test_deleting_ones_session_leaves_the_others(alice: httpx.Client, bob: httpx.Client) -> None:
    session_id = chosen()
    create(alice, session_id=session_id)
    create(bob, session_id=session_id)
    remember(bob, session_id, "bob keeps this")
    busy = nap(bob, 5, session_id=session_id)
    wait_for_status(bob, busy["run_id"], "running")
    assert alice.delete(f"/v1/sessions/{session_id}").status_code == 204
    assert alice.get(f"/v1/sessions/{session_id}").status_code == 404
    session = bob.get(f"/v1/sessions/{session_id}").json()
    assert session["status"] == "busy"
    assert [m["content"] for m in session["history"]] == ["bob keeps this"]
    assert bob.get(f"/v1/runs/{busy['run_id']}").json()["status"] == "running"
    assert bob.post(f"/v1/runs/{busy['run_id']}/cancel").status_code == 202


# -- listing -----------------------------------------------------------------------------------


def test_listing_shows_ones_own_sessions_newest_activity_first(alice: httpx.Client, bob: httpx.Client) -> None:
    first, second, third = chosen(), chosen(), chosen()
    for session_id in (first, second, third):
        create(alice, session_id=session_id)
    create(bob, session_id=first)
    remember(alice, first, "now the newest")
    page = listed(alice)
    assert [s["session_id"] for s in page["sessions"]] == [first, third, second]
    assert page["next"] is None
    assert all(set(session) == LISTED_FIELDS for session in page["sessions"])
    assert listed_ids(bob) == [first]


def test_listing_pages_with_before(alice: httpx.Client) -> None:
    made = [chosen() for _ in range(5)]
    for session_id in made:
        create(alice, session_id=session_id)
    seen: list[str] = []
    cursor = None
    for _ in range(3):
        page = listed(alice, limit=2, **({"before": cursor} if cursor else {}))
        seen += [session["session_id"] for session in page["sessions"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == made[::-1]
    assert cursor is None


def test_listing_says_each_sessions_status(serve: Serve, new_client: NewClient) -> None:
    client = new_client(serve(session_ttl_s=0.5))
    idle, busy = chosen(), chosen()
    create(client, session_id=idle)
    create(client, session_id=busy)
    running = nap(client, 5, session_id=busy)
    wait_for_status(client, running["run_id"], "running")
    statuses = {s["session_id"]: s["status"] for s in listed(client)["sessions"]}
    assert statuses == {idle: "idle", busy: "busy"}
    client.post(f"/v1/runs/{running['run_id']}/cancel")
    wait_finished(client, running["run_id"])
    deadline = time.monotonic() + 10
    while set(statuses.values()) != {"expired"} and time.monotonic() < deadline:
        time.sleep(0.05)  # expiry is a matter of time passing: no event to await
        statuses = {s["session_id"]: s["status"] for s in listed(client)["sessions"]}
    assert statuses == {idle: "expired", busy: "expired"}


def test_listing_filters_on_metadata(alice: httpx.Client) -> None:
    fr, de, pro = chosen(), chosen(), chosen()
    create(alice, session_id=fr, metadata={"lang": "fr", "tier": 1})
    create(alice, session_id=de, metadata={"lang": "de", "tier": 2, "beta": True})
    create(alice, session_id=pro, metadata={"lang": "fr", "tier": 2})
    assert listed_ids(alice, **{"metadata.lang": "fr"}) == [pro, fr]
    assert listed_ids(alice, **{"metadata.lang": "fr", "metadata.tier": "2"}) == [pro]
    assert listed_ids(alice, **{"metadata.beta": "true"}) == [de]
    assert listed_ids(alice, **{"metadata.lang": "es"}) == []
    assert listed_ids(alice, **{"metadata.missing": "fr"}) == []


def test_deleted_sessions_are_not_listed(alice: httpx.Client) -> None:
    kept, gone = chosen(), chosen()
    create(alice, session_id=kept)
    create(alice, session_id=gone)
    alice.delete(f"/v1/sessions/{gone}")
    assert listed_ids(alice) == [kept]


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 201}, {"limit": "x"}, {"before": "not-a-cursor"}, {"metadata.a b": "x"}],
    ids=["limit-0", "limit-201", "limit-text", "bad-cursor", "bad-key"],
)
def test_a_bad_listing_query_is_400(alice: httpx.Client, params: dict[str, Any]) -> None:
    response = alice.get("/v1/sessions", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in {"invalid_query", "invalid_cursor"}
