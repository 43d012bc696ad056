"""``/v1/sessions``: conversations whose runs share a memory, and nobody else's."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.http.conftest import NewClient, Serve
from tests.http.helpers import (
    all_events,
    assert_error,
    assert_well_formed_log,
    create_run,
    list_runs,
    parse_time,
    snapshot,
    wait_finished,
    wait_for_status,
)

SESSION_FIELDS = {"session_id", "created_at", "last_activity", "status", "metadata", "history"}


def new_session(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/sessions", json=body)
    assert response.status_code == 201, response.text
    session: dict[str, Any] = response.json()
    return session


def get_session(client: httpx.Client, session_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/sessions/{session_id}")
    assert response.status_code == 200, response.text
    session: dict[str, Any] = response.json()
    return session


def remember(client: httpx.Client, session_id: str, note: str, marker: str | None = None) -> dict[str, Any]:
    """Run ``remember`` in the session and wait for it; returns the final snapshot."""
    run = create_run(client, "remember", {"note": note, "marker": marker}, session_id=session_id)
    done = wait_finished(client, run["run_id"])
    assert done["status"] == "succeeded", done
    return done


def notes(history: list[dict[str, Any]]) -> list[Any]:
    return [message["content"] for message in history]


# -- create and read ---------------------------------------------------------------------------


def test_create_answers_201_with_the_session(client: httpx.Client) -> None:
    response = client.post("/v1/sessions", json={"metadata": {"user": "u1"}})
    assert response.status_code == 201
    session = response.json()
    assert set(session) == SESSION_FIELDS
    assert session["session_id"]
    assert session["metadata"] == {"user": "u1"}
    assert session["history"] == []
    assert session["status"] == "idle"
    assert parse_time(session["created_at"]) == parse_time(session["last_activity"])
    assert get_session(client, session["session_id"]) == session


def test_create_without_a_body_gives_empty_metadata(client: httpx.Client) -> None:
    response = client.post("/v1/sessions")
    assert response.status_code == 201
    assert response.json()["metadata"] == {}


def test_session_is_busy_while_a_run_is_unfinished(client: httpx.Client) -> None:
    session = new_session(client)
    run = create_run(client, "nap", {"seconds": 5}, session_id=session["session_id"])
    wait_for_status(client, run["run_id"], {"running"})
    assert get_session(client, session["session_id"])["status"] == "busy"
    client.post(f"/v1/runs/{run['run_id']}/cancel")
    wait_finished(client, run["run_id"])
    assert get_session(client, session["session_id"])["status"] == "idle"


def test_a_run_in_the_session_moves_its_last_activity(client: httpx.Client) -> None:
    session = new_session(client)
    time.sleep(0.01)
    remember(client, session["session_id"], "hello")
    after = get_session(client, session["session_id"])
    assert parse_time(after["last_activity"]) > parse_time(session["last_activity"])
    assert after["created_at"] == session["created_at"]


# -- memory ------------------------------------------------------------------------------------


def test_history_accumulates_across_the_runs_of_one_session(any_server: str, new_client: NewClient) -> None:
    client = new_client(any_server)
    session_id = new_session(client)["session_id"]
    first = remember(client, session_id, "one", marker="a")
    second = remember(client, session_id, "two", marker="b")
    assert notes(first["output"]["history"]) == ["one"]
    assert notes(second["output"]["history"]) == ["one", "two"]
    history = get_session(client, session_id)["history"]
    assert notes(history) == ["one", "two"]
    assert [m["role"] for m in history] == ["user", "user"]
    assert [m["marker"] for m in history] == ["a", "b"]
    for message in history:
        parse_time(message["ts"])


def test_history_never_crosses_sessions(client: httpx.Client, other: httpx.Client) -> None:
    mine, also_mine = new_session(client)["session_id"], new_session(client)["session_id"]
    theirs = new_session(other)["session_id"]
    remember(client, mine, "mine")
    remember(client, also_mine, "also mine")
    remember(other, theirs, "theirs")
    assert notes(get_session(client, mine)["history"]) == ["mine"]
    assert notes(get_session(client, also_mine)["history"]) == ["also mine"]
    assert notes(get_session(other, theirs)["history"]) == ["theirs"]


def test_runs_without_a_session_share_no_memory(client: httpx.Client) -> None:
    outputs = []
    for note in ("a", "b"):
        run = create_run(client, "remember", {"note": note})
        outputs.append(wait_finished(client, run["run_id"])["output"])
    assert [notes(output["history"]) for output in outputs] == [["a"], ["b"]]


def test_memory_keeps_only_the_newest_history_max_messages(serve: Serve, new_client: NewClient) -> None:
    client = new_client(serve(history_max=3))
    session_id = new_session(client)["session_id"]
    for i in range(5):
        done = remember(client, session_id, f"n{i}")
        assert len(done["output"]["history"]) == min(i + 1, 3)
    assert notes(get_session(client, session_id)["history"]) == ["n2", "n3", "n4"]


# -- delete ------------------------------------------------------------------------------------


def test_delete_answers_204_and_then_the_session_is_gone(client: httpx.Client) -> None:
    session_id = new_session(client)["session_id"]
    response = client.delete(f"/v1/sessions/{session_id}")
    assert response.status_code == 204
    assert response.content == b""
    assert_error(client.get(f"/v1/sessions/{session_id}"), 404, "session_not_found")
    assert_error(client.delete(f"/v1/sessions/{session_id}"), 404, "session_not_found")


def test_delete_cancels_unfinished_runs_and_keeps_every_run_readable(any_server: str, new_client: NewClient) -> None:
    client = new_client(any_server)
    session_id = new_session(client)["session_id"]
    done = remember(client, session_id, "kept in the run, forgotten by the session")
    running = create_run(client, "nap", {"seconds": 5}, session_id=session_id)
    queued = create_run(client, "nap", {"seconds": 5}, session_id=session_id)
    wait_for_status(client, running["run_id"], {"running"})
    assert client.delete(f"/v1/sessions/{session_id}").status_code == 204
    assert wait_finished(client, running["run_id"], timeout=5)["status"] == "cancelled"
    assert wait_finished(client, queued["run_id"], timeout=5)["status"] == "cancelled"
    for run_id in (running["run_id"], queued["run_id"]):
        assert_well_formed_log(all_events(client, run_id))
    # the runs stay readable, the finished one with its output
    assert snapshot(client, done["run_id"]) == done
    assert all_events(client, done["run_id"])[-1]["type"] == "end"
    assert {run["run_id"] for run in list_runs(client, session_id=session_id)} == {
        done["run_id"],
        running["run_id"],
        queued["run_id"],
    }


@pytest.mark.parametrize("route", ["/v1/runs", "/v1/runs/stream", "/v1/runs/wait"])
def test_new_runs_in_a_deleted_session_are_404_session_not_found(client: httpx.Client, route: str) -> None:
    session_id = new_session(client)["session_id"]
    client.delete(f"/v1/sessions/{session_id}")
    response = client.post(route, json={"pipeline": "whoami", "input": None, "session_id": session_id})
    assert_error(response, 404, "session_not_found")
    assert list_runs(client) == []


def test_a_deleted_sessions_memory_is_forgotten(client: httpx.Client) -> None:
    """Nothing of the memory is reachable: the session is gone, and a new session starts empty."""
    session_id = new_session(client)["session_id"]
    remember(client, session_id, "secret")
    client.delete(f"/v1/sessions/{session_id}")
    assert_error(client.get(f"/v1/sessions/{session_id}"), 404, "session_not_found")
    fresh = new_session(client)["session_id"]
    assert notes(remember(client, fresh, "new")["output"]["history"]) == ["new"]


# -- ownership ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_another_owners_session_is_a_404_identical_to_a_missing_one(
    client: httpx.Client, other: httpx.Client, method: str
) -> None:
    session_id = new_session(other)["session_id"]
    missing = "ses_" + "0" * 24
    assert len(missing) == len(session_id)
    theirs = client.request(method, f"/v1/sessions/{session_id}")
    nothing = client.request(method, f"/v1/sessions/{missing}")
    assert_error(theirs, 404, "session_not_found")
    assert theirs.content == nothing.content.replace(missing.encode(), session_id.encode())
    # the owner still has it
    assert get_session(other, session_id)["session_id"] == session_id


def test_another_owner_cannot_delete_a_session_or_cancel_its_runs(client: httpx.Client, other: httpx.Client) -> None:
    session_id = new_session(other)["session_id"]
    run = create_run(other, "nap", {"seconds": 0.3}, session_id=session_id)
    assert_error(client.delete(f"/v1/sessions/{session_id}"), 404, "session_not_found")
    assert wait_finished(other, run["run_id"])["status"] == "succeeded"


def test_another_owners_session_history_is_not_visible(client: httpx.Client, other: httpx.Client) -> None:
    session_id = new_session(other)["session_id"]
    remember(other, session_id, "private")
    response = client.get(f"/v1/sessions/{session_id}")
    assert_error(response, 404, "session_not_found")
    assert b"private" not in response.content


# -- expiry ------------------------------------------------------------------------------------


# These specs are about the clock, so they take it as an input: each waits for the time that
# matters to pass since the activity the server reports, rather than sleeping a guess. The TTL is
# long next to one request (a few ms; 0.75 s of slack at the tightest step), so that a machine
# slowed by load cannot pass for an idle session.
TTL_S = 1.5


def seconds_since(timestamp: str) -> float:
    return time.time() - parse_time(timestamp).timestamp()  # the server's clock is this machine's


def wait_until_older_than(timestamp: str, seconds: float) -> None:
    """Until ``seconds`` have passed since ``timestamp``: the clock the TTL reads."""
    time.sleep(max(0.0, seconds - seconds_since(timestamp)))


def wait_for_session_status(
    client: httpx.Client, session_id: str, status: str, timeout: float = 10.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (session := get_session(client, session_id))["status"] != status:
        assert time.monotonic() < deadline, f"session {session_id} still {session['status']}, wanted {status}"
        time.sleep(0.02)
    return session


def test_an_idle_session_expires_after_the_ttl(serve: Serve, new_client: NewClient) -> None:
    client = new_client(serve(session_ttl_s=TTL_S))
    session_id = new_session(client)["session_id"]
    done = remember(client, session_id, "before expiry")
    alive = get_session(client, session_id)
    assert notes(alive["history"]) == ["before expiry"]
    expired = wait_for_session_status(client, session_id, "expired")
    assert seconds_since(alive["last_activity"]) > TTL_S, "expired only once the TTL had passed"
    assert expired["history"] == []
    for route in ("/v1/runs", "/v1/runs/stream", "/v1/runs/wait"):
        response = client.post(route, json={"pipeline": "whoami", "input": None, "session_id": session_id})
        assert_error(response, 404, "session_not_found")
    # its finished runs stay readable
    assert snapshot(client, done["run_id"]) == done
    assert [run["run_id"] for run in list_runs(client)] == [done["run_id"]]


def test_activity_keeps_a_session_alive(serve: Serve, new_client: NewClient) -> None:
    client = new_client(serve(session_ttl_s=TTL_S))
    session = new_session(client)
    session_id = session["session_id"]
    for note in ("a", "b", "c"):
        wait_until_older_than(session["last_activity"], TTL_S / 2)
        remember(client, session_id, note)
        session = get_session(client, session_id)
    assert seconds_since(session["created_at"]) > TTL_S, "older than its TTL: alive by its activity alone"
    assert session["status"] == "idle"
    assert notes(session["history"]) == ["a", "b", "c"]


def test_a_session_with_a_long_run_is_not_idle_and_does_not_expire(serve: Serve, new_client: NewClient) -> None:
    client = new_client(serve(session_ttl_s=TTL_S))
    session_id = new_session(client)["session_id"]
    run = create_run(client, "nap", {"seconds": TTL_S + 1.0}, session_id=session_id)
    started = get_session(client, session_id)
    wait_until_older_than(started["last_activity"], TTL_S + 0.1)
    assert get_session(client, session_id)["status"] == "busy", "idle for longer than the TTL, but not idle"
    wait_finished(client, run["run_id"])
    follow_up = client.post("/v1/runs", json={"pipeline": "whoami", "input": None, "session_id": session_id})
    assert follow_up.status_code == 201, follow_up.text
