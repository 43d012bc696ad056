"""``POST /v1/runs/{run_id}/input``: answering the question a waiting run asked
(``ctx.ask``), over real HTTP on each store."""

from __future__ import annotations

import httpx
import pytest

from tests.http.conftest import NewClient
from tests.http.helpers import all_events, assert_error, create_run, snapshot, wait_finished, wait_for_status


@pytest.fixture
def client(any_server: str, new_client: NewClient) -> httpx.Client:
    return new_client(any_server)


def asked(client: httpx.Client, question: str = "ok?") -> dict[str, object]:
    run = create_run(client, "approve", {"question": question})
    return wait_for_status(client, run["run_id"], {"waiting"})


def test_a_waiting_run_shows_its_question_and_is_listed_as_waiting(client: httpx.Client) -> None:
    run = asked(client, "ship it?")
    waiting_for = run["waiting_for"]
    assert isinstance(waiting_for, dict)
    assert waiting_for["request"] == {"question": "ship it?"}
    assert waiting_for["schema"]["required"] == ["ok"]
    assert waiting_for["ask_id"].startswith("ask_")
    listed = client.get("/v1/runs", params={"status": "waiting"}).json()["runs"]
    assert run["run_id"] in [r["run_id"] for r in listed]
    assert {r["status"] for r in listed} == {"waiting"}


def test_an_answer_is_accepted_with_202_and_the_run_finishes_with_it(client: httpx.Client) -> None:
    run = asked(client)
    response = client.post(
        f"/v1/runs/{run['run_id']}/input", json={"value": {"ok": True}, "ask_id": run["waiting_for"]["ask_id"]}
    )  # type: ignore[index]
    assert response.status_code == 202, response.text
    assert response.json()["status"] in ("queued", "running", "succeeded")
    assert response.json()["waiting_for"] is None
    done = wait_finished(client, run["run_id"])  # type: ignore[arg-type]
    assert done["status"] == "succeeded" and done["output"] == {"answer": {"ok": True}}
    types = [e["type"] for e in all_events(client, run["run_id"])]  # type: ignore[arg-type]
    assert types.count("input.requested") == 1 and types.count("input.received") == 1
    assert types.index("input.requested") < types.index("input.received") < types.index("answer")


def test_an_answer_that_does_not_fit_the_schema_is_422_and_changes_nothing(client: httpx.Client) -> None:
    run = asked(client)
    for bad in ({"ok": "yes"}, {}, "ok", None):
        response = client.post(f"/v1/runs/{run['run_id']}/input", json={"value": bad})
        body = assert_error(response, 422, "invalid_input")
        assert "schema" in body["error"]["message"]
    after = snapshot(client, run["run_id"])  # type: ignore[arg-type]
    assert after["status"] == "waiting" and after["last_seq"] == run["last_seq"]


def test_a_body_without_value_or_with_unknown_fields_is_422(client: httpx.Client) -> None:
    run = asked(client)
    for body in ({}, {"value": 1, "extra": 2}, {"value": 1, "ask_id": "not an id!"}):
        assert_error(client.post(f"/v1/runs/{run['run_id']}/input", json=body), 422, "invalid_request")
    assert_error(client.post(f"/v1/runs/{run['run_id']}/input", content=b"{nope"), 400, "invalid_json")


def test_another_questions_ask_id_is_409_ask_mismatch(client: httpx.Client) -> None:
    run = asked(client)
    response = client.post(f"/v1/runs/{run['run_id']}/input", json={"value": {"ok": True}, "ask_id": "ask_other"})
    assert_error(response, 409, "ask_mismatch")
    assert snapshot(client, run["run_id"])["status"] == "waiting"  # type: ignore[arg-type]


def test_answering_a_run_not_waiting_is_409_and_a_missing_one_404(client: httpx.Client) -> None:
    run = asked(client)
    assert client.post(f"/v1/runs/{run['run_id']}/input", json={"value": {"ok": False}}).status_code == 202
    wait_finished(client, run["run_id"])  # type: ignore[arg-type]
    again = client.post(f"/v1/runs/{run['run_id']}/input", json={"value": {"ok": True}})
    assert_error(again, 409, "run_not_waiting")
    assert_error(client.post("/v1/runs/run_missing/input", json={"value": 1}), 404, "run_not_found")


def test_another_owners_waiting_run_is_404(any_server: str, new_client: NewClient) -> None:
    mine = asked(new_client(any_server))
    theirs = new_client(any_server)
    response = theirs.post(f"/v1/runs/{mine['run_id']}/input", json={"value": {"ok": True}})
    assert_error(response, 404, "run_not_found")


def test_a_waiting_run_is_cancelled_by_its_cancel_endpoint(client: httpx.Client) -> None:
    run = asked(client)
    response = client.post(f"/v1/runs/{run['run_id']}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert response.json()["waiting_for"] is None
