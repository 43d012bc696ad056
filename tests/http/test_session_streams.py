"""Session streams: ``GET /v1/sessions/{id}/stream`` — every event of every run of
the session in the order they were persisted, each carrying its ``run_id``,
resumable exactly by the frame's ``id:``; it stays open across runs and ends
when the session is deleted."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import Any

import httpx
import pytest

from tests.http.conftest import NewClient, Serve
from tests.http.helpers import Block, all_events, assert_error, create_run, nap, sse_blocks, sse_events, wait_finished


def new_session(client: httpx.Client) -> str:
    response = client.post("/v1/sessions", json={})
    assert response.status_code == 201, response.text
    session_id: str = response.json()["session_id"]
    return session_id


def stream(client: httpx.Client, session_id: str, **params: str) -> Any:
    headers = {}
    if "last_event_id" in params:
        headers["Last-Event-ID"] = params.pop("last_event_id")
    return client.stream("GET", f"/v1/sessions/{session_id}/stream", params=params, headers=headers)


def read(
    response: httpx.Response, count: int, blocks: Iterator[Block] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """The next ``count`` events (of ``blocks``, read from ``response``) as
    (frame id, event), checking each frame's shape."""
    assert response.status_code == 200
    frames = []
    for block in islice(blocks if blocks is not None else sse_events(response), count):
        event = block.event()
        assert set(event) == {"run_id", "seq", "type", "data", "ts"}
        assert block.fields["event"] == event["type"]
        frames.append((block.fields["id"], event))
    return frames


def conversation(client: httpx.Client, session_id: str, runs: int = 3) -> list[dict[str, Any]]:
    """``runs`` finished ticker runs in the session; every event of each, run by run."""
    events = []
    for i in range(runs):
        run = create_run(client, "ticker", {"marker": "m", "count": 2 + i}, session_id=session_id)
        wait_finished(client, run["run_id"])
        events += [{"run_id": run["run_id"], **event} for event in all_events(client, run["run_id"])]
    return events


def test_a_session_stream_sends_every_event_of_every_run_in_order(any_server: str, new_client: NewClient) -> None:
    client = new_client(any_server)
    session_id = new_session(client)
    logged = conversation(client, session_id)
    with stream(client, session_id) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        streamed = [event for _, event in read(response, len(logged))]
    # runs of a session execute one at a time: their events were persisted run by run
    assert streamed == logged


def test_a_session_stream_resumes_from_every_position_without_gap_or_repeat(
    any_server: str, new_client: NewClient
) -> None:
    client = new_client(any_server)
    session_id = new_session(client)
    logged = conversation(client, session_id)
    with stream(client, session_id) as response:
        full = read(response, len(logged))
    for i, (cursor, _) in enumerate(full):
        how = {"last_event_id": cursor} if i % 2 else {"after": cursor}
        rest = len(full) - i - 1
        with stream(client, session_id, **how) as response:
            resumed = read(response, rest)
            if not rest:
                continue
        assert resumed == full[i + 1 :], f"resumed after frame {i}"


def test_a_run_created_after_the_stream_opened_appears(any_server: str, new_client: NewClient) -> None:
    client = new_client(any_server)
    session_id = new_session(client)
    first = conversation(client, session_id, runs=1)
    with stream(client, session_id) as response:
        blocks = sse_events(response)
        assert [event for _, event in read(response, len(first), blocks)] == first
        run = create_run(client, "ticker", {"marker": "m", "count": 2}, session_id=session_id)
        later = []
        while not later or later[-1]["type"] != "end":
            later += [event for _, event in read(response, 1, blocks)]
    assert later == [{"run_id": run["run_id"], **event} for event in all_events(client, run["run_id"])]


def test_the_stream_ends_when_the_session_is_deleted(any_server: str, new_client: NewClient) -> None:
    client = new_client(any_server)
    session_id = new_session(client)
    run = nap(client, 30, session_id=session_id)
    with stream(client, session_id) as response:
        blocks = sse_events(response)
        assert read(response, 1, blocks)[0][1]["run_id"] == run["run_id"]
        assert client.delete(f"/v1/sessions/{session_id}").status_code == 204
        rest = [block.event() for block in blocks]  # ends by itself
    assert rest[-1]["type"] == "end" and rest[-1]["run_id"] == run["run_id"]
    assert [event["data"].get("status") for event in rest if event["type"] == "status"][-1] == "cancelled"


def test_an_idle_session_stream_stays_open_with_heartbeats(serve: Serve, new_client: NewClient) -> None:
    client = new_client(serve(sse_heartbeat_s=0.05))
    session_id = new_session(client)
    with stream(client, session_id, pad="64") as response:
        blocks = list(islice(sse_blocks(response), 3))
    assert all(block.comments and not block.is_event for block in blocks)
    assert all(len(block.raw) >= 64 for block in blocks)


def test_another_owners_session_is_not_found(client: httpx.Client, other: httpx.Client) -> None:
    session_id = new_session(client)
    with stream(other, session_id) as response:
        response.read()
        assert_error(response, 404, "session_not_found")
    with stream(client, "no-such-session") as response:
        response.read()
        assert_error(response, 404, "session_not_found")


@pytest.mark.parametrize("cursor", ["-1", "abc", "1.5"])
def test_a_malformed_cursor_is_refused(client: httpx.Client, cursor: str) -> None:
    session_id = new_session(client)
    with stream(client, session_id, after=cursor) as response:
        response.read()
        assert_error(response, 400, "invalid_cursor")


def test_a_new_session_stream_begins_with_its_first_run(client: httpx.Client) -> None:
    session_id = new_session(client)
    run = create_run(client, "ticker", {"marker": "m", "count": 1}, session_id=session_id)
    with stream(client, session_id) as response:
        first = read(response, 1)[0][1]
    assert first["run_id"] == run["run_id"] and first["seq"] == 1


def test_the_stream_ends_when_the_session_expires(serve: Serve, new_client: NewClient) -> None:
    client = new_client(serve(session_ttl_s=0.5, sse_heartbeat_s=0.1))
    session_id = new_session(client)
    first = conversation(client, session_id, runs=1)
    with stream(client, session_id) as response:
        blocks = sse_events(response)
        assert [event for _, event in read(response, len(first), blocks)] == first
        assert list(blocks) == []  # ends by itself once the session has been idle past its TTL
    assert client.get(f"/v1/sessions/{session_id}").json()["status"] == "expired"


def test_a_long_history_is_replayed_in_pages_then_followed_live(any_server: str, new_client: NewClient) -> None:
    client = new_client(any_server)
    session_id = new_session(client)
    history = []
    for count in (2500, 1500):  # more than a page (2,000 events at most) each way
        run = create_run(client, "ticker", {"marker": "m", "count": count}, session_id=session_id)
        wait_finished(client, run["run_id"])
        logged = client.get(f"/v1/runs/{run['run_id']}/events", params={"limit": 10_000}).json()["events"]
        assert len(logged) == count + 3
        history += [{"run_id": run["run_id"], **event} for event in logged]
    with stream(client, session_id) as response:
        blocks = sse_events(response)
        assert [event for _, event in read(response, len(history), blocks)] == history
        live = create_run(client, "ticker", {"marker": "m", "count": 2}, session_id=session_id)
        (first,) = [event for _, event in read(response, 1, blocks)]
    assert first["run_id"] == live["run_id"] and first["seq"] == 1


def test_a_reader_that_stops_reading_blocks_no_other_follower(any_server: str, new_client: NewClient) -> None:
    client = new_client(any_server)
    session_id = new_session(client)
    with stream(client, session_id, pad="4096") as stalled:  # read once, then never again
        assert stalled.status_code == 200
        run = create_run(client, "ticker", {"marker": "m", "count": 3000, "payload_bytes": 1000}, session_id=session_id)
        with stream(client, session_id) as response:
            blocks = sse_events(response)
            events = []
            while not events or events[-1]["type"] != "end":
                events += [event for _, event in read(response, 1, blocks)]
    assert [event["seq"] for event in events] == list(range(1, 3004))
    assert {event["run_id"] for event in events} == {run["run_id"]}
