"""``/v1/runs``: create, read, page, wait, cancel and list runs over real HTTP (streams: ``test_run_streams``)."""

from __future__ import annotations

import itertools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.http.conftest import NewClient, Serve
from tests.http.helpers import (
    SNAPSHOT_FIELDS,
    all_events,
    assert_error,
    assert_well_formed_log,
    create_run,
    list_runs,
    nap,
    parse_time,
    snapshot,
    ticker,
    wait_finished,
    wait_for_event,
    wait_for_status,
)

# -- create and snapshot -----------------------------------------------------------------------


def test_create_answers_201_with_a_queued_snapshot_and_its_location(client: httpx.Client) -> None:
    response = client.post(
        "/v1/runs", json={"pipeline": "ticker", "input": {"marker": "new", "count": 2}, "metadata": {"team": "a"}}
    )
    assert response.status_code == 201
    assert response.headers["content-type"].startswith("application/json")
    run = response.json()
    assert set(run) == SNAPSHOT_FIELDS
    assert response.headers["location"] == f"/v1/runs/{run['run_id']}"
    assert run["status"] == "queued"
    assert run["pipeline"] == "ticker"
    assert run["input"]["marker"] == "new" and run["input"]["count"] == 2
    assert run["attempt"] == 1
    assert run["last_seq"] == 0
    assert run["output"] is None and run["error"] is None
    assert run["started_at"] is None and run["finished_at"] is None
    assert run["metadata"] == {"team": "a"}
    assert run["session_id"]
    created = parse_time(run["created_at"])
    assert abs(created.timestamp() - time.time()) < 60


def test_location_answers_the_same_run(client: httpx.Client) -> None:
    response = client.post("/v1/runs", json={"pipeline": "whoami", "input": None})
    again = client.get(response.headers["location"])
    assert again.status_code == 200
    assert again.json()["run_id"] == response.json()["run_id"]


def test_metadata_defaults_to_an_empty_object(client: httpx.Client) -> None:
    assert create_run(client, "whoami", None)["metadata"] == {}


def test_finished_snapshot_has_output_times_and_last_seq(any_server: str, new_client: NewClient) -> None:
    client = new_client(any_server)
    run = ticker(client, count=3)
    done = wait_finished(client, run["run_id"])
    assert set(done) == SNAPSHOT_FIELDS
    assert done["status"] == "succeeded"
    assert done["output"] == {"marker": "m", "count": 3}
    assert done["error"] is None
    created, started, finished = (parse_time(done[k]) for k in ("created_at", "started_at", "finished_at"))
    assert created <= started <= finished
    events = all_events(client, run["run_id"])
    assert done["last_seq"] == events[-1]["seq"] == len(events)
    assert_well_formed_log(events)


def test_a_run_without_session_gets_a_new_session_of_its_own(client: httpx.Client) -> None:
    first, second = create_run(client, "whoami", None), create_run(client, "whoami", None)
    assert first["session_id"] != second["session_id"]
    session = client.get(f"/v1/sessions/{first['session_id']}")
    assert session.status_code == 200
    assert session.json()["session_id"] == first["session_id"]


def test_whoami_sees_its_own_run_session_and_owner_through_current_run(client: httpx.Client) -> None:
    run = create_run(client, "whoami", None)
    done = wait_finished(client, run["run_id"])
    assert done["status"] == "succeeded"
    owner = client.headers["X-Client-Id"]
    assert done["output"] == {"run_id": run["run_id"], "session_id": run["session_id"], "owner": owner}


# -- events ------------------------------------------------------------------------------------


def test_events_of_a_ticker_run_are_status_ticks_status_end(client: httpx.Client) -> None:
    run = ticker(client, count=3)
    wait_finished(client, run["run_id"])
    events = all_events(client, run["run_id"])
    assert_well_formed_log(events)
    assert [e["type"] for e in events] == ["status", "tick", "tick", "tick", "status", "end"]
    assert events[0]["data"]["status"] == "running"
    assert [e["data"]["i"] for e in events if e["type"] == "tick"] == [0, 1, 2]
    assert all(e["data"]["marker"] == "m" for e in events if e["type"] == "tick")
    assert events[-2]["data"] == {"status": "succeeded"}
    assert events[-1]["data"] == {"status": "succeeded", "output": {"marker": "m", "count": 3}}


def test_events_page_with_after_limit_and_next_after(any_server: str, new_client: NewClient) -> None:
    client = new_client(any_server)
    run = ticker(client, count=8)
    done = wait_finished(client, run["run_id"])
    url = f"/v1/runs/{run['run_id']}/events"
    seen: list[int] = []
    after = 0
    while True:
        page = client.get(url, params={"after": after, "limit": 3}).json()
        assert set(page) == {"events", "next_after", "status"}
        assert page["status"] == "succeeded"
        assert len(page["events"]) <= 3
        if not page["events"]:
            assert page["next_after"] == after
            break
        assert page["events"][0]["seq"] == after + 1
        assert page["next_after"] == page["events"][-1]["seq"]
        seen += [event["seq"] for event in page["events"]]
        after = page["next_after"]
    assert seen == list(range(1, done["last_seq"] + 1))


def test_events_page_of_an_unfinished_run_says_it_is_running(client: httpx.Client) -> None:
    run = nap(client, 5)
    wait_for_event(client, run["run_id"], "napping")
    page = client.get(f"/v1/runs/{run['run_id']}/events").json()
    assert page["status"] == "running"
    assert [e["type"] for e in page["events"]] == ["status", "napping"]
    assert page["next_after"] == 2
    client.post(f"/v1/runs/{run['run_id']}/cancel")


def test_events_without_parameters_start_at_the_first(client: httpx.Client) -> None:
    run = ticker(client, count=1)
    wait_finished(client, run["run_id"])
    page = client.get(f"/v1/runs/{run['run_id']}/events", params={"after": ""}).json()
    assert page["events"][0]["seq"] == 1


# -- POST /v1/runs/wait ------------------------------------------------------------------------


def test_wait_answers_200_with_the_final_snapshot(client: httpx.Client) -> None:
    response = client.post("/v1/runs/wait", json={"pipeline": "ticker", "input": {"marker": "w", "count": 2}})
    assert response.status_code == 200
    run = response.json()
    assert set(run) == SNAPSHOT_FIELDS
    assert run["status"] == "succeeded"
    assert run["output"] == {"marker": "w", "count": 2}
    assert run["finished_at"] is not None
    assert run["last_seq"] == len(all_events(client, run["run_id"]))


def test_wait_answers_200_for_a_failed_run_too(client: httpx.Client) -> None:
    response = client.post("/v1/runs/wait", json={"pipeline": "boom", "input": {}})
    assert response.status_code == 200
    assert response.json()["status"] == "failed"


def test_wait_answers_202_with_the_current_snapshot_after_wait_max(serve: Serve, new_client: NewClient) -> None:
    client = new_client(serve(wait_max_s=0.3))
    started = time.monotonic()
    response = client.post("/v1/runs/wait", json={"pipeline": "nap", "input": {"seconds": 5}})
    assert 0.25 <= time.monotonic() - started < 3
    assert response.status_code == 202
    run = response.json()
    assert set(run) == SNAPSHOT_FIELDS
    assert run["status"] in ("queued", "running")
    assert response.headers["location"] == f"/v1/runs/{run['run_id']}"
    client.post(f"/v1/runs/{run['run_id']}/cancel")


# -- cancel ------------------------------------------------------------------------------------


def test_cancel_answers_202_and_the_run_ends_cancelled_with_one_end(any_server: str, new_client: NewClient) -> None:
    client = new_client(any_server)
    run = nap(client, 5)
    wait_for_event(client, run["run_id"], "napping")
    response = client.post(f"/v1/runs/{run['run_id']}/cancel")
    assert response.status_code == 202
    assert set(response.json()) == SNAPSHOT_FIELDS
    assert response.json()["run_id"] == run["run_id"]
    done = wait_finished(client, run["run_id"], timeout=5)
    assert done["status"] == "cancelled"
    assert done["error"]["code"] == "cancelled"
    assert done["output"] is None
    events = all_events(client, run["run_id"])
    assert_well_formed_log(events)
    assert events[-1]["data"]["status"] == "cancelled"
    assert {"status": "cancelled"} in [e["data"] for e in events if e["type"] == "status"]


def test_cancel_of_a_queued_run_ends_it_without_running_it(client: httpx.Client) -> None:
    first = nap(client, 5)
    second = nap(client, 5, session_id=first["session_id"])  # enqueued behind the first
    assert snapshot(client, second["run_id"])["status"] == "queued"
    assert client.post(f"/v1/runs/{second['run_id']}/cancel").status_code == 202
    done = wait_finished(client, second["run_id"])
    assert done["status"] == "cancelled"
    assert done["started_at"] is None
    events = all_events(client, second["run_id"])
    assert_well_formed_log(events)
    assert {"status": "running", "attempt": 1} not in [e["data"] for e in events]
    client.post(f"/v1/runs/{first['run_id']}/cancel")


def test_cancel_of_a_finished_run_is_409_run_finished(client: httpx.Client) -> None:
    run = ticker(client, count=1)
    wait_finished(client, run["run_id"])
    assert_error(client.post(f"/v1/runs/{run['run_id']}/cancel"), 409, "run_finished")
    assert snapshot(client, run["run_id"])["status"] == "succeeded"


def test_cancel_twice_ends_the_run_once(client: httpx.Client) -> None:
    run = nap(client, 5)
    wait_for_event(client, run["run_id"], "napping")
    first = client.post(f"/v1/runs/{run['run_id']}/cancel")
    second = client.post(f"/v1/runs/{run['run_id']}/cancel")
    assert first.status_code == 202
    assert second.status_code in (202, 409)
    wait_finished(client, run["run_id"])
    assert_well_formed_log(all_events(client, run["run_id"]))


# -- failures and timeouts ---------------------------------------------------------------------


def test_failing_pipeline_ends_failed_with_an_error_event_and_no_traceback(client: httpx.Client) -> None:
    run = create_run(client, "boom", {})
    done = wait_finished(client, run["run_id"])
    assert done["status"] == "failed"
    assert "flux capacitor" in done["error"]["message"]
    events = all_events(client, run["run_id"])
    assert_well_formed_log(events)
    errors = [e["data"] for e in events if e["type"] == "error"]
    assert len(errors) == 1
    assert set(errors[0]) == {"code", "message"}
    assert "flux capacitor" in errors[0]["message"]
    assert events[-1]["data"] == {"status": "failed", "error": done["error"]}
    everything = json.dumps(done) + json.dumps(events)
    for leak in ("Traceback", 'File "', ".py", "/work/", "line "):
        assert leak not in everything


def test_pipeline_past_its_timeout_ends_timed_out(client: httpx.Client) -> None:
    run = create_run(client, "nap_short", {"seconds": 5})
    done = wait_finished(client, run["run_id"], timeout=5)
    assert done["status"] == "timed_out"
    assert done["error"]["code"] == "timed_out"
    events = all_events(client, run["run_id"])
    assert_well_formed_log(events)
    assert events[-1]["data"]["status"] == "timed_out"
    assert [e for e in events if e["type"] == "error"]


def test_timeout_in_the_request_applies_to_a_pipeline_that_declares_none(client: httpx.Client) -> None:
    run = create_run(client, "nap", {"seconds": 5}, timeout_s=0.2)
    assert wait_finished(client, run["run_id"], timeout=5)["status"] == "timed_out"


def test_a_request_may_shorten_its_pipelines_timeout_but_never_lengthen_it(client: httpx.Client) -> None:
    longer = create_run(client, "nap_short", {"seconds": 2}, timeout_s=60)  # nap_short declares 0.3 s
    finished = wait_finished(client, longer["run_id"], timeout=5)
    assert finished["status"] == "timed_out" and "0.3 s" in finished["error"]["message"]
    shorter = create_run(client, "nap_short", {"seconds": 2}, timeout_s=0.1)
    assert "0.1 s" in wait_finished(client, shorter["run_id"], timeout=5)["error"]["message"]


@pytest.mark.parametrize(
    ("pipeline", "input", "status"),
    [
        ("ticker", {"marker": "e", "count": 3}, "succeeded"),
        ("ticker", {"marker": "e", "count": 3, "fail_at": 1}, "failed"),
        ("boom", None, "failed"),
        ("nap_short", {"seconds": 2}, "timed_out"),
        ("whoami", None, "succeeded"),
        ("remember", {"note": "n"}, "succeeded"),
        ("remember", {}, "failed"),
        ("stubborn", None, "cancelled"),
    ],
)
def test_every_run_ends_with_exactly_one_end_event_last(
    client: httpx.Client, pipeline: str, input: Any, status: str
) -> None:
    run = create_run(client, pipeline, input)
    if status == "cancelled":
        wait_for_status(client, run["run_id"], {"running"})
        client.post(f"/v1/runs/{run['run_id']}/cancel")
    done = wait_finished(client, run["run_id"], timeout=5)
    assert done["status"] == status
    events = all_events(client, run["run_id"])
    assert_well_formed_log(events)
    assert events[-1]["data"]["status"] == status
    assert done["last_seq"] == events[-1]["seq"]


# -- listing -----------------------------------------------------------------------------------


def test_list_shows_only_the_callers_runs_newest_first(client: httpx.Client, other: httpx.Client) -> None:
    mine = [create_run(client, "whoami", None)["run_id"] for _ in range(3)]
    theirs = create_run(other, "whoami", None)["run_id"]
    response = client.get("/v1/runs")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"runs", "next"}
    assert [run["run_id"] for run in body["runs"]] == mine[::-1]
    assert body["next"] is None
    assert all(set(run) == SNAPSHOT_FIELDS for run in body["runs"])
    assert [run["run_id"] for run in list_runs(other)] == [theirs]


def test_list_pages_with_before_and_next(any_server: str, new_client: NewClient) -> None:
    client = new_client(any_server)
    created = [create_run(client, "whoami", None)["run_id"] for _ in range(5)]
    pages: list[list[str]] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        body = client.get("/v1/runs", params=params).json()
        pages.append([run["run_id"] for run in body["runs"]])
        if body["next"] is None:
            break
        assert body["next"] == pages[-1][-1]
        params = {"limit": 2, "before": body["next"]}
    assert pages == [created[4:2:-1], created[2:0:-1], created[0:1]]


def test_list_filters_by_session(client: httpx.Client) -> None:
    session_id = client.post("/v1/sessions").json()["session_id"]
    in_session = [create_run(client, "whoami", None, session_id=session_id)["run_id"] for _ in range(2)]
    create_run(client, "whoami", None)
    runs = list_runs(client, session_id=session_id)
    assert [run["run_id"] for run in runs] == in_session[::-1]
    assert all(run["session_id"] == session_id for run in runs)


def test_list_filters_by_status(client: httpx.Client) -> None:
    done = ticker(client, count=1)
    wait_finished(client, done["run_id"])
    failed = create_run(client, "boom", {})
    wait_finished(client, failed["run_id"])
    napping = nap(client, 5)
    wait_for_status(client, napping["run_id"], {"running"})
    assert [r["run_id"] for r in list_runs(client, status="succeeded")] == [done["run_id"]]
    assert [r["run_id"] for r in list_runs(client, status="failed")] == [failed["run_id"]]
    assert [r["run_id"] for r in list_runs(client, status="running")] == [napping["run_id"]]
    assert list_runs(client, status="timed_out") == []
    client.post(f"/v1/runs/{napping['run_id']}/cancel")


def test_list_of_another_owners_session_is_empty(client: httpx.Client, other: httpx.Client) -> None:
    run = create_run(other, "whoami", None)
    assert list_runs(client, session_id=run["session_id"]) == []


# -- ownership ---------------------------------------------------------------------------------

OWNED_ROUTES = [
    pytest.param("GET", "/v1/runs/{id}", id="snapshot"),
    pytest.param("GET", "/v1/runs/{id}/events", id="events"),
    pytest.param("GET", "/v1/runs/{id}/stream", id="stream"),
    pytest.param("POST", "/v1/runs/{id}/cancel", id="cancel"),
]


@pytest.mark.parametrize(("method", "template"), OWNED_ROUTES)
def test_another_owners_run_is_a_404_identical_to_a_missing_one(
    client: httpx.Client, other: httpx.Client, method: str, template: str
) -> None:
    run = nap(other, 5)
    missing = "run_" + "0" * 24
    assert len(missing) == len(run["run_id"])
    theirs = client.request(method, template.format(id=run["run_id"]))
    nothing = client.request(method, template.format(id=missing))
    assert_error(theirs, 404, "run_not_found")
    assert theirs.status_code == nothing.status_code
    assert theirs.headers["content-type"] == nothing.headers["content-type"]
    assert theirs.content == nothing.content.replace(missing.encode(), run["run_id"].encode())
    # and the owner's run went on untouched
    assert wait_for_status(other, run["run_id"], {"running"})["status"] == "running"
    other.post(f"/v1/runs/{run['run_id']}/cancel")


def test_another_owner_cannot_cancel_a_run(client: httpx.Client, other: httpx.Client) -> None:
    run = nap(other, 0.3)
    assert_error(client.post(f"/v1/runs/{run['run_id']}/cancel"), 404, "run_not_found")
    assert wait_finished(other, run["run_id"])["status"] == "succeeded"


def test_list_before_another_owners_run_is_the_same_as_before_a_missing_run(
    client: httpx.Client, other: httpx.Client
) -> None:
    create_run(client, "whoami", None)
    theirs = create_run(other, "whoami", None)["run_id"]
    missing = "run_" + "0" * 24
    with_theirs = client.get("/v1/runs", params={"before": theirs})
    with_missing = client.get("/v1/runs", params={"before": missing})
    assert with_theirs.status_code == with_missing.status_code
    assert with_theirs.content == with_missing.content.replace(missing.encode(), theirs.encode())


# -- multitask ---------------------------------------------------------------------------------


def test_multitask_reject_is_409_session_busy_while_a_run_is_unfinished(client: httpx.Client) -> None:
    first = nap(client, 5)
    wait_for_status(client, first["run_id"], {"running"})
    response = client.post(
        "/v1/runs",
        json={"pipeline": "nap", "input": {"seconds": 0.1}, "session_id": first["session_id"], "multitask": "reject"},
    )
    assert_error(response, 409, "session_busy")
    assert [run["run_id"] for run in list_runs(client)] == [first["run_id"]]
    assert snapshot(client, first["run_id"])["status"] == "running"
    client.post(f"/v1/runs/{first['run_id']}/cancel")
    wait_finished(client, first["run_id"])
    again = create_run(client, "whoami", None, session_id=first["session_id"], multitask="reject")
    assert wait_finished(client, again["run_id"])["status"] == "succeeded"


def test_multitask_reject_admits_exactly_one_of_racing_runs(server: str, client: httpx.Client) -> None:
    session_id = client.post("/v1/sessions").json()["session_id"]
    body = {"pipeline": "nap", "input": {"seconds": 5}, "session_id": session_id, "multitask": "reject"}

    def post(_: int) -> int:
        with httpx.Client(base_url=server, headers=client.headers, timeout=10) as racer:
            return racer.post("/v1/runs", json=body).status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = sorted(pool.map(post, range(10)))
    assert statuses == [201] + [409] * 9
    (run,) = list_runs(client, session_id=session_id)
    client.post(f"/v1/runs/{run['run_id']}/cancel")


def test_multitask_interrupt_cancels_the_unfinished_run_and_then_runs(client: httpx.Client) -> None:
    first = nap(client, 5)
    wait_for_status(client, first["run_id"], {"running"})
    second = nap(client, 0.1, session_id=first["session_id"], multitask="interrupt")
    first_done = wait_finished(client, first["run_id"])
    second_done = wait_finished(client, second["run_id"])
    assert first_done["status"] == "cancelled"
    assert second_done["status"] == "succeeded"
    assert parse_time(second_done["started_at"]) >= parse_time(first_done["finished_at"])
    assert_well_formed_log(all_events(client, first["run_id"]))


@pytest.mark.parametrize("fields", [{"multitask": "enqueue"}, {}], ids=["enqueue", "default"])
def test_multitask_enqueue_runs_a_sessions_runs_one_at_a_time_in_order(
    client: httpx.Client, fields: dict[str, str]
) -> None:
    first = nap(client, 0.3)
    second = nap(client, 0.1, session_id=first["session_id"], **fields)
    third = nap(client, 0.1, session_id=first["session_id"], **fields)
    done = [wait_finished(client, run["run_id"]) for run in (first, second, third)]
    assert [run["status"] for run in done] == ["succeeded"] * 3
    for earlier, later in itertools.pairwise(done):
        assert parse_time(later["started_at"]) >= parse_time(earlier["finished_at"])


def test_runs_of_different_sessions_run_at_the_same_time(client: httpx.Client) -> None:
    first, second = nap(client, 0.5), nap(client, 0.5)
    done = [wait_finished(client, run["run_id"]) for run in (first, second)]
    assert parse_time(done[1]["started_at"]) < parse_time(done[0]["finished_at"])
