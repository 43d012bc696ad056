"""Scheduled runs over HTTP (issue 13): ``after_s`` on a run's creation, and
``/v1/crons`` (create, list, read, change, delete), its errors, and its owners."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.http.helpers import assert_error, create_run, list_runs, parse_time, wait_finished

CRON_FIELDS = {
    "cron_id",
    "pipeline",
    "input",
    "schedule",
    "timezone",
    "session_id",
    "metadata",
    "webhook",
    "enabled",
    "next_run_at",
    "last_run_id",
    "last_run_at",
    "created_at",
    "updated_at",
}
NAP = {"pipeline": "nap", "input": {"seconds": 0.01}}


def new_cron(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/crons", json={**NAP, "schedule": "*/5 * * * *", **body})
    assert response.status_code == 201, response.text
    cron: dict[str, Any] = response.json()
    return cron


# -- after_s ---------------------------------------------------------------------


def test_a_run_with_after_s_is_queued_at_once_and_starts_only_from_its_time(client: httpx.Client) -> None:
    run = create_run(client, "nap", {"seconds": 0.01}, after_s=1.5)
    assert run["status"] == "queued"
    scheduled_for = parse_time(run["scheduled_for"])
    assert (scheduled_for - parse_time(run["created_at"])).total_seconds() == pytest.approx(1.5, abs=0.01)
    done = wait_finished(client, run["run_id"])
    assert done["status"] == "succeeded"
    assert parse_time(done["started_at"]) >= scheduled_for


def test_a_run_without_after_s_has_no_scheduled_time(client: httpx.Client) -> None:
    assert create_run(client, "nap", {"seconds": 0.01})["scheduled_for"] is None


@pytest.mark.parametrize("after_s", [-1, 31_536_001, "soon", None])
def test_after_s_outside_0_to_a_year_is_refused(client: httpx.Client, after_s: Any) -> None:
    response = client.post("/v1/runs", json={**NAP, "after_s": after_s})
    if after_s is None:  # null is the same as absent
        assert response.status_code == 201, response.text
        return
    assert_error(response, 422, {"invalid_request", "invalid_input"})


# -- crons: records ----------------------------------------------------------------


def test_a_cron_is_created_with_its_next_due_time_and_read_back(client: httpx.Client) -> None:
    response = client.post(
        "/v1/crons",
        json={**NAP, "schedule": "30 9 * * 1-5", "timezone": "Europe/Paris", "metadata": {"team": "a"}},
    )
    assert response.status_code == 201, response.text
    cron = response.json()
    assert set(cron) == CRON_FIELDS
    assert response.headers["location"] == f"/v1/crons/{cron['cron_id']}"
    assert (cron["enabled"], cron["timezone"], cron["metadata"], cron["last_run_id"]) == (
        True,
        "Europe/Paris",
        {"team": "a"},
        None,
    )
    due = parse_time(cron["next_run_at"])
    assert due.weekday() < 5 and (due.hour, due.minute) in {(7, 30), (8, 30)}  # 09:30 in Paris, summer or winter
    assert client.get(f"/v1/crons/{cron['cron_id']}").json() == cron
    assert client.get("/v1/crons").json() == {"crons": [cron]}


def test_a_cron_s_schedule_input_and_enabled_change_and_it_is_deleted(client: httpx.Client) -> None:
    cron = new_cron(client)
    url = f"/v1/crons/{cron['cron_id']}"
    changed = client.patch(url, json={"schedule": "0 0 1 1 *", "input": {"seconds": 0.02}})
    assert changed.status_code == 200, changed.text
    assert changed.json()["input"]["seconds"] == 0.02  # as the pipeline validated it
    assert parse_time(changed.json()["next_run_at"]).strftime("%m-%d %H:%M") == "01-01 00:00"
    disabled = client.patch(url, json={"enabled": False}).json()
    assert (disabled["enabled"], disabled["next_run_at"]) == (False, None)
    enabled = client.patch(url, json={"enabled": True}).json()
    assert enabled["next_run_at"] == changed.json()["next_run_at"]
    assert client.delete(url).status_code == 204
    assert_error(client.get(url), 404, "cron_not_found")
    assert_error(client.delete(url), 404, "cron_not_found")
    assert client.get("/v1/crons").json() == {"crons": []}


def test_a_cron_created_disabled_has_no_next_run(client: httpx.Client) -> None:
    assert new_cron(client, enabled=False)["next_run_at"] is None


# -- crons: errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"schedule": "every day"},
        {"schedule": "61 * * * *"},
        {"schedule": "* * * * * *"},  # six fields (seconds) are not a 5-field cron
        {"schedule": "0 0 30 2 *"},  # never comes
        {"timezone": "Mars/Olympus"},
        {"timezone": "Europe"},
        {"timezone": "../../etc/passwd"},
    ],
)
def test_a_bad_schedule_or_time_zone_is_invalid_schedule(client: httpx.Client, fields: dict[str, Any]) -> None:
    response = client.post("/v1/crons", json={**NAP, "schedule": "* * * * *", **fields})
    assert_error(response, 422, "invalid_schedule")
    assert client.get("/v1/crons").json() == {"crons": []}


def test_a_cron_of_an_unknown_pipeline_or_session_is_not_found(client: httpx.Client) -> None:
    assert_error(
        client.post("/v1/crons", json={**NAP, "pipeline": "nope", "schedule": "* * * * *"}), 404, "pipeline_not_found"
    )
    unknown_session = {**NAP, "schedule": "* * * * *", "session_id": "ses_missing"}
    assert_error(client.post("/v1/crons", json=unknown_session), 404, "session_not_found")


def test_a_cron_s_input_is_validated_like_a_run_s(client: httpx.Client) -> None:
    body = {"pipeline": "nap", "input": {"seconds": "long"}, "schedule": "* * * * *"}
    run_error = client.post("/v1/runs", json={"pipeline": "nap", "input": {"seconds": "long"}}).json()["error"]
    response = client.post("/v1/crons", json=body)
    assert_error(response, 422, run_error["code"])
    cron = new_cron(client)
    patched = client.patch(f"/v1/crons/{cron['cron_id']}", json={"input": {"seconds": "long"}})
    assert_error(patched, 422, run_error["code"])
    assert client.get(f"/v1/crons/{cron['cron_id']}").json() == cron  # unchanged


def test_a_bad_patch_changes_nothing(client: httpx.Client) -> None:
    cron = new_cron(client)
    url = f"/v1/crons/{cron['cron_id']}"
    assert_error(client.patch(url, json={"schedule": "nope", "enabled": False}), 422, "invalid_schedule")
    assert_error(client.patch(url, json={"timezone": "UTC"}), 422, {"invalid_request", "invalid_input"})
    assert client.get(url).json() == cron


# -- crons: owners -----------------------------------------------------------------


def test_another_owner_s_cron_is_a_missing_one(client: httpx.Client, other: httpx.Client) -> None:
    cron = new_cron(client)
    url = f"/v1/crons/{cron['cron_id']}"
    assert other.get("/v1/crons").json() == {"crons": []}
    assert_error(other.get(url), 404, "cron_not_found")
    assert_error(other.patch(url, json={"enabled": False}), 404, "cron_not_found")
    assert_error(other.delete(url), 404, "cron_not_found")
    assert client.get(url).json() == cron


def test_a_cron_may_not_name_another_owner_s_session(client: httpx.Client, other: httpx.Client) -> None:
    theirs = other.post("/v1/sessions", json={}).json()["session_id"]
    response = client.post("/v1/crons", json={**NAP, "schedule": "* * * * *", "session_id": theirs})
    assert_error(response, 404, "session_not_found")
    assert list_runs(client) == []
