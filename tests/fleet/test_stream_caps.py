"""Streams per owner across a fleet (issue 10, item 6): ``RUNYARD_MAX_STREAMS_PER_OWNER``
caps an owner's open streams over every API process sharing a Redis prefix, not
over each one; a place comes back when a stream closes, and when a process
dies holding some, once their lease (``RUNYARD_LIMIT_LEASE_S``) ends."""

from __future__ import annotations

import contextlib
import time

import httpx
import pytest

from tests.fleet.conftest import Fleet
from tests.remote import OWNER, create
from tests.support import ServerProcess

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

CAPPED = {"RUNYARD_MAX_STREAMS_PER_OWNER": "2", "RUNYARD_LIMIT_LEASE_S": "2"}


def open_stream(held: contextlib.ExitStack, client: httpx.Client, run_id: str) -> httpx.Response:
    response = held.enter_context(client.stream("GET", f"/v1/runs/{run_id}/stream"))
    assert response.status_code == 200, response.read()
    return response


def stream_status(client: httpx.Client, run_id: str) -> int:
    """The status a new stream of ``run_id`` gets (closed again at once)."""
    with client.stream("GET", f"/v1/runs/{run_id}/stream") as response:
        return response.status_code


def accepted_within(client: httpx.Client, run_id: str, seconds: float) -> float | None:
    """How long until a stream of ``run_id`` is accepted, or None if not within ``seconds``."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if stream_status(client, run_id) == 200:
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def api_pair(fleet: Fleet) -> tuple[ServerProcess, ServerProcess]:
    return fleet.start("api", **CAPPED), fleet.start("api", **CAPPED)


def test_two_streams_through_one_api_process_fill_the_owners_places_on_the_other(fleet: Fleet) -> None:
    a, b = api_pair(fleet)
    run_id = create(a.url, "nap", {"seconds": 60})  # queued (no worker): its streams stay open
    with (
        httpx.Client(base_url=a.url, headers=OWNER, timeout=10) as via_a,
        httpx.Client(base_url=b.url, headers=OWNER, timeout=10) as via_b,
        contextlib.ExitStack() as held,
    ):
        first = open_stream(held, via_a, run_id)
        open_stream(held, via_a, run_id)
        runs_before = via_b.get("/v1/runs").json()["runs"]

        refused = via_b.get(f"/v1/runs/{run_id}/stream")
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "too_many_streams"
        creating = via_b.post("/v1/runs/stream", json={"pipeline": "nap", "input": {"seconds": 1}})
        assert creating.status_code == 429, creating.text
        assert via_b.get("/v1/runs").json()["runs"] == runs_before, "a refused stream created a run"
        session_id = via_b.post("/v1/sessions", json={}).json()["session_id"]
        session_stream = via_b.get(f"/v1/sessions/{session_id}/stream")
        assert session_stream.status_code == 429, session_stream.text
        someone_else = {"X-Client-Id": "someone-else"}
        theirs = via_b.post("/v1/runs", json={"pipeline": "nap", "input": {"seconds": 60}}, headers=someone_else)
        with via_b.stream("GET", f"/v1/runs/{theirs.json()['run_id']}/stream", headers=someone_else) as response:
            assert response.status_code == 200, "another owner was refused"

        first.close()
        assert accepted_within(via_b, run_id, 5) is not None, "B never accepted after A's stream closed"


def test_a_killed_processs_places_come_back_once_their_lease_ends(fleet: Fleet) -> None:
    a, b = api_pair(fleet)
    run_id = create(a.url, "nap", {"seconds": 60})
    with (
        httpx.Client(base_url=a.url, headers=OWNER, timeout=10) as via_a,
        httpx.Client(base_url=b.url, headers=OWNER, timeout=10) as via_b,
        contextlib.ExitStack() as held,
    ):
        open_stream(held, via_a, run_id)
        open_stream(held, via_a, run_id)
        a.kill()  # kill -9: nothing gives the places back
        assert stream_status(via_b, run_id) == 429, "a dead process's places came back before their lease ended"
        waited = accepted_within(via_b, run_id, 10)
        assert waited is not None, "a dead process's places never came back"
        assert waited < 2 + 1, f"came back after {waited:.1f}s, with a lease of 2 s"
        with contextlib.suppress(httpx.HTTPError):
            held.close()  # the killed process's connections


def test_a_refused_stream_gives_its_place_back_and_the_runs_own_error_comes_first(fleet: Fleet) -> None:
    """A stream of a missing run, or from a cursor past the run's end, is
    answered 404 / 400 even while the owner is at the cap (the run's own error
    first), and leaves none of the owner's places taken behind it."""
    a, _ = api_pair(fleet)
    run_id = create(a.url, "nap", {"seconds": 60})
    with httpx.Client(base_url=a.url, headers=OWNER, timeout=10) as client, contextlib.ExitStack() as held:
        for _ in range(5):  # more refusals than the owner has places
            assert client.get("/v1/runs/run_missing/stream").status_code == 404
            past_end = client.get(f"/v1/runs/{run_id}/stream", headers={"Last-Event-ID": "9"})
            assert past_end.status_code == 400, past_end.text
        open_stream(held, client, run_id)
        open_stream(held, client, run_id)  # both places were free
        assert stream_status(client, run_id) == 429
        assert client.get("/v1/runs/run_missing/stream").status_code == 404, "the cap hid a missing run"
        past_end = client.get(f"/v1/runs/{run_id}/stream", headers={"Last-Event-ID": "9"})
        assert past_end.status_code == 400, past_end.text
