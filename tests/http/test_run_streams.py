"""Run streams over SSE: ``GET /v1/runs/{id}/stream`` and ``POST /v1/runs/stream`` —
frames, cursors, padding, heartbeats and what a client's disconnect does."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import httpx
import pytest

from tests.http.conftest import NewClient, Serve
from tests.http.helpers import (
    all_events,
    assert_frame_matches_event,
    assert_well_formed_log,
    create_run,
    list_runs,
    nap,
    snapshot,
    sse_blocks,
    sse_events,
    ticker,
    wait_finished,
)


def test_stream_sends_every_event_as_an_sse_frame_then_closes(any_server: str, new_client: NewClient) -> None:
    client = new_client(any_server)
    run = ticker(client, count=4)
    wait_finished(client, run["run_id"])
    logged = all_events(client, run["run_id"])
    with client.stream("GET", f"/v1/runs/{run['run_id']}/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        streamed = [assert_frame_matches_event(block) for block in sse_events(response)]
    assert streamed == logged


def test_stream_frame_is_exactly_id_event_data(client: httpx.Client) -> None:
    run = ticker(client, count=1)
    wait_finished(client, run["run_id"])
    with client.stream("GET", f"/v1/runs/{run['run_id']}/stream") as response:
        raw = response.read()
    first = raw.split(b"\n\n")[0]
    lines = first.split(b"\n")
    assert lines[0] == b"id: 1"
    assert lines[1] == b"event: status"
    assert lines[2].startswith(b"data: {")
    assert len(lines) == 3
    assert json.loads(lines[2][len(b"data: ") :]) == all_events(client, run["run_id"])[0]


def test_stream_follows_a_live_run_to_its_end(client: httpx.Client) -> None:
    run = nap(client, 0.3, marker="live")
    with client.stream("GET", f"/v1/runs/{run['run_id']}/stream") as response:
        events = [assert_frame_matches_event(block) for block in sse_events(response)]
    assert [e["type"] for e in events] == ["status", "napping", "woke", "status", "end"]
    assert events[1]["data"] == {"marker": "live"}
    assert_well_formed_log(events)


@pytest.mark.parametrize("after", [0, 1, 3, 6])
def test_stream_after_a_cursor_sends_only_later_events(client: httpx.Client, after: int) -> None:
    run = ticker(client, count=4)
    done = wait_finished(client, run["run_id"])
    with client.stream("GET", f"/v1/runs/{run['run_id']}/stream", params={"after": after}) as response:
        seqs = [assert_frame_matches_event(block)["seq"] for block in sse_events(response)]
    assert seqs == list(range(after + 1, done["last_seq"] + 1))


@pytest.mark.parametrize("how", ["after", "last-event-id"])
def test_stream_from_the_last_event_of_a_finished_run_closes_at_once(client: httpx.Client, how: str) -> None:
    """Regression: such a stream waited for an ``end`` it had already sent, so an
    EventSource reconnecting after the end hung on heartbeats forever."""
    run = ticker(client, count=1)
    done = wait_finished(client, run["run_id"])
    cursor = str(done["last_seq"])
    params, headers = ({"after": cursor}, {}) if how == "after" else ({}, {"Last-Event-ID": cursor})
    url = f"/v1/runs/{run['run_id']}/stream"
    with client.stream("GET", url, params=params, headers=headers, timeout=httpx.Timeout(10, read=1)) as response:
        assert response.status_code in (200, 204)  # 204 also tells an EventSource not to reconnect
        assert list(sse_events(response)) == []


def test_last_event_id_wins_over_after(client: httpx.Client) -> None:
    run = ticker(client, count=4)
    wait_finished(client, run["run_id"])
    url = f"/v1/runs/{run['run_id']}/stream"
    with client.stream("GET", url, params={"after": 1}, headers={"Last-Event-ID": "4"}) as response:
        seqs = [block.event()["seq"] for block in sse_events(response)]
    assert seqs[0] == 5


def test_reconnecting_with_last_event_id_continues_without_loss_or_duplicates(client: httpx.Client) -> None:
    run = create_run(client, "ticker", {"marker": "r", "count": 30, "interval_ms": 5})
    url = f"/v1/runs/{run['run_id']}/stream"
    received: list[dict[str, Any]] = []
    connections = 0
    while not received or received[-1]["type"] != "end":
        headers = {"Last-Event-ID": str(received[-1]["seq"])} if received else {}
        connections += 1
        with client.stream("GET", url, headers=headers) as response:
            for n, block in enumerate(sse_events(response), 1):
                received.append(block.event())
                if n == 7:
                    break  # the connection drops
    assert connections > 1
    assert [event["seq"] for event in received] == list(range(1, len(received) + 1))
    assert received == all_events(client, run["run_id"])


def _assert_padded(raw: bytes, pad: int) -> list[bytes]:
    blocks = [block + b"\n\n" for block in raw.split(b"\n\n")[:-1]]
    assert raw.endswith(b"\n\n")
    assert blocks
    for block in blocks:
        assert len(block) >= pad, (len(block), block[:120])
    return blocks


@pytest.mark.parametrize("pad", [1, 64, 512, 4096])
def test_pad_query_pads_every_frame_to_at_least_n_bytes(client: httpx.Client, pad: int) -> None:
    run = ticker(client, count=3)
    wait_finished(client, run["run_id"])
    with client.stream("GET", f"/v1/runs/{run['run_id']}/stream", params={"pad": pad}) as response:
        raw = response.read()
    blocks = _assert_padded(raw, pad)
    events = [_parse(block) for block in blocks]
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))


def _parse(block: bytes) -> dict[str, Any]:
    data = [line for line in block.split(b"\n") if line.startswith(b"data: ")]
    assert len(data) == 1
    parsed: dict[str, Any] = json.loads(data[0][len(b"data: ") :])
    return parsed


def test_pad_setting_pads_every_frame_of_every_stream(serve: Serve, new_client: NewClient) -> None:
    client = new_client(serve(sse_pad_bytes=700))
    run = ticker(client, count=3)
    wait_finished(client, run["run_id"])
    with client.stream("GET", f"/v1/runs/{run['run_id']}/stream") as response:
        _assert_padded(response.read(), 700)
    with client.stream("POST", "/v1/runs/stream", json={"pipeline": "ticker", "input": {"marker": "p"}}) as response:
        _assert_padded(response.read(), 700)


def test_pad_query_overrides_the_setting(serve: Serve, new_client: NewClient) -> None:
    client = new_client(serve(sse_pad_bytes=700))
    run = ticker(client, count=1)
    wait_finished(client, run["run_id"])
    with client.stream("GET", f"/v1/runs/{run['run_id']}/stream", params={"pad": 2000}) as response:
        _assert_padded(response.read(), 2000)


def test_pad_query_pads_a_post_stream_too(client: httpx.Client) -> None:
    body = {"pipeline": "ticker", "input": {"marker": "p", "count": 2}}
    with client.stream("POST", "/v1/runs/stream", params={"pad": 600}, json=body) as response:
        assert response.status_code == 200
        _assert_padded(response.read(), 600)


def test_heartbeat_comes_after_silence(serve: Serve, new_client: NewClient) -> None:
    client = new_client(serve(sse_heartbeat_s=0.2))
    run = nap(client, 1.0)
    with client.stream("GET", f"/v1/runs/{run['run_id']}/stream") as response:
        blocks = list(sse_blocks(response))
    kinds = ["ping" if "ping" in block.comments else block.fields.get("event") for block in blocks]
    napping, woke = kinds.index("napping"), kinds.index("woke")
    pings = kinds[napping:woke].count("ping")
    assert 2 <= pings <= 8, kinds
    for block in blocks:
        if "ping" in block.comments:
            assert block.raw == b": ping\n\n"
    assert kinds[-1] == "end"


def test_heartbeat_is_padded_too(serve: Serve, new_client: NewClient) -> None:
    client = new_client(serve(sse_heartbeat_s=0.1))
    # Streamed from its creation, so the nap is silence on a live stream however late the machine is.
    body = {"pipeline": "nap", "input": {"seconds": 0.4}}
    with client.stream("POST", "/v1/runs/stream", params={"pad": 300}, json=body) as response:
        blocks = _assert_padded(response.read(), 300)
    assert any(b": ping\n" in block for block in blocks)


def test_a_client_that_drops_a_get_stream_does_not_stop_the_run(client: httpx.Client) -> None:
    run = nap(client, 0.5)
    with client.stream("GET", f"/v1/runs/{run['run_id']}/stream") as response:
        for block in sse_events(response):
            if block.fields["event"] == "napping":
                break
    assert wait_finished(client, run["run_id"])["status"] == "succeeded"


# -- POST /v1/runs/stream ----------------------------------------------------------------------


def test_post_stream_creates_the_run_and_streams_it_from_its_first_event(client: httpx.Client) -> None:
    body = {"pipeline": "ticker", "input": {"marker": "ps", "count": 3}}
    with client.stream("POST", "/v1/runs/stream", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        location = response.headers["location"]
        events = [assert_frame_matches_event(block) for block in sse_events(response)]
    assert_well_formed_log(events)
    assert [e["type"] for e in events].count("tick") == 3
    run_id = location.rsplit("/", 1)[1]
    assert [run["run_id"] for run in list_runs(client)] == [run_id]
    assert all_events(client, run_id) == events


def _drop_after_napping(client: httpx.Client, **fields: Any) -> str:
    body = {"pipeline": "nap", "input": {"seconds": 0.6}, **fields}
    with client.stream("POST", "/v1/runs/stream", json=body) as response:
        run_id = response.headers["location"].rsplit("/", 1)[1]
        for block in sse_events(response):
            if block.fields["event"] == "napping":
                break
    return run_id


def test_post_stream_with_on_disconnect_cancel_cancels_the_run_when_the_client_goes(client: httpx.Client) -> None:
    run_id = _drop_after_napping(client, on_disconnect="cancel")
    done = wait_finished(client, run_id, timeout=5)
    assert done["status"] == "cancelled"
    events = all_events(client, run_id)
    assert_well_formed_log(events)
    assert "woke" not in [e["type"] for e in events]
    assert events[-1]["data"]["status"] == "cancelled"


@pytest.mark.parametrize("fields", [{"on_disconnect": "continue"}, {}], ids=["continue", "default"])
def test_post_stream_with_on_disconnect_continue_lets_the_run_finish(
    client: httpx.Client, fields: dict[str, str]
) -> None:
    run_id = _drop_after_napping(client, **fields)
    done = wait_finished(client, run_id, timeout=5)
    assert done["status"] == "succeeded"
    assert "woke" in [e["type"] for e in all_events(client, run_id)]


def test_post_stream_with_on_disconnect_cancel_leaves_a_run_that_finished_alone(client: httpx.Client) -> None:
    body = {"pipeline": "ticker", "input": {"marker": "f", "count": 2}, "on_disconnect": "cancel"}
    with client.stream("POST", "/v1/runs/stream", json=body) as response:
        run_id = response.headers["location"].rsplit("/", 1)[1]
        list(sse_events(response))
    time.sleep(0.1)
    assert snapshot(client, run_id)["status"] == "succeeded"


def test_streams_past_max_streams_per_owner_get_429_too_many_streams_and_create_no_run(
    serve: Serve, new_client: NewClient
) -> None:
    """Issue 10, hostile clients: one owner could hold any number of streams open.
    Past ``RUNYARD_MAX_STREAMS_PER_OWNER`` the next stream, on either streaming
    endpoint, gets 429 ``too_many_streams`` with ``Retry-After``; the refused
    ``POST /v1/runs/stream`` leaves no run behind; another owner is not affected;
    a slot comes back once one of the owner's streams ends."""
    url = serve(max_streams_per_owner=2)
    client, other = new_client(url), new_client(url)
    napping = nap(client, 30)["run_id"]
    finished = ticker(client, count=2)["run_id"]
    wait_finished(client, finished)
    with contextlib.ExitStack() as held:
        for _ in range(2):
            assert held.enter_context(client.stream("GET", f"/v1/runs/{napping}/stream")).status_code == 200
        runs_before = list_runs(client)

        refusals = [
            client.get(f"/v1/runs/{finished}/stream"),
            client.post("/v1/runs/stream", json={"pipeline": "ticker", "input": {"marker": "x", "count": 1}}),
        ]
        for refused in refusals:
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "too_many_streams"
            assert refused.headers["retry-after"] == "5"
        assert list_runs(client) == runs_before, "a refused stream created a run"

        theirs = ticker(other, count=1)["run_id"]
        with other.stream("GET", f"/v1/runs/{theirs}/stream") as response:
            assert response.status_code == 200
            assert [e.event()["type"] for e in sse_events(response)][-1] == "end"

    deadline = time.monotonic() + 5
    while (status := client.get(f"/v1/runs/{finished}/stream").status_code) == 429 and time.monotonic() < deadline:
        pass  # the server sees the two streams go as their connections close
    assert status == 200
