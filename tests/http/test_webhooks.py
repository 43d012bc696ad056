"""Webhooks over real HTTP (issue 13): ``"webhook"`` on run creation, the signed
delivery of the final snapshot, retries, and the SSRF guard at creation. The
receivers listen on 127.0.0.1 only, allowed with RUNYARD_WEBHOOK_ALLOW_HOSTS."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from runyard.client import APIError, AsyncClient, Client
from runyard.webhooks import verify_signature
from tests.http.conftest import NewClient, Serve
from tests.http.helpers import assert_error, wait_finished
from tests.http.test_system import metrics_text, sample
from tests.webhooks.receiver import Receiver

SECRET = "whsec_test"
NAP = {"pipeline": "nap", "input": {"seconds": 0}}


@pytest.fixture
def allowed(serve: Serve, new_client: NewClient) -> httpx.Client:
    """A server that signs with ``SECRET`` and may call 127.0.0.1."""
    return new_client(serve(webhook_secret=SECRET, webhook_allow_hosts="127.0.0.1"))


def delivered(client: httpx.Client, result: str) -> float:
    return sample(metrics_text(client), "runyard_webhook_deliveries_total", result=result) or 0.0


def test_a_receiver_that_fails_twice_gets_the_final_snapshot_signed_on_the_third_try(allowed: httpx.Client) -> None:
    before = {result: delivered(allowed, result) for result in ("delivered", "failed")}
    with Receiver(failures=2).running() as receiver:
        created = allowed.post("/v1/runs", json={**NAP, "webhook": receiver.url})
        assert created.status_code == 201, created.text
        run_id = created.json()["run_id"]
        (delivery,) = receiver.wait_for(1)
    assert receiver.requests == 3
    assert delivery.run_id == run_id
    assert verify_signature(delivery.body, delivery.signature, SECRET)
    assert not verify_signature(delivery.body, delivery.signature, "another secret")
    final = json.loads(delivery.body)
    assert final == wait_finished(allowed, run_id)
    assert final["status"] == "succeeded" and final["output"] == {"slept": 0}
    assert delivered(allowed, "delivered") - before["delivered"] == 1
    assert delivered(allowed, "failed") - before["failed"] == 2
    assert delivery.host == f"127.0.0.1:{receiver.port}"


def test_the_python_clients_pass_the_webhook(serve: Serve) -> None:
    url = serve(webhook_secret=SECRET, webhook_allow_hosts="127.0.0.1")
    with Receiver().running() as receiver:
        with Client(url, client_id="hooked") as client:
            sync_run = client.create("nap", {"seconds": 0}, webhook=receiver.url)
            with pytest.raises(APIError) as refused:
                client.create("nap", {"seconds": 0}, webhook="http://10.0.0.1/hook")
        assert refused.value.code == "invalid_webhook"

        async def create() -> dict[str, object]:
            async with AsyncClient(url, client_id="hooked") as client:
                return await client.create("nap", {"seconds": 0}, webhook=receiver.url)

        async_run = asyncio.run(create())
        deliveries = receiver.wait_for(2)
    assert sorted(d.run_id for d in deliveries) == sorted([sync_run["run_id"], async_run["run_id"]])


@pytest.mark.parametrize("path", ["/v1/runs", "/v1/runs/wait"])
def test_a_failed_run_is_delivered_too(allowed: httpx.Client, path: str) -> None:
    with Receiver().running() as receiver:
        response = allowed.post(path, json={"pipeline": "boom", "input": None, "webhook": receiver.url})
        assert response.status_code in (200, 201), response.text
        (delivery,) = receiver.wait_for(1)
    assert json.loads(delivery.body)["status"] == "failed"


def test_a_streamed_run_is_delivered_once_it_is_cancelled(allowed: httpx.Client) -> None:
    with Receiver().running() as receiver:
        body = {"pipeline": "nap", "input": {"seconds": 30}, "webhook": receiver.url}
        with allowed.stream("POST", "/v1/runs/stream", json=body) as stream:
            assert stream.status_code == 200
            run_id = stream.headers["Location"].rsplit("/", 1)[1]
        assert allowed.post(f"/v1/runs/{run_id}/cancel").status_code in (200, 202)
        (delivery,) = receiver.wait_for(1)
    assert delivery.run_id == run_id and json.loads(delivery.body)["status"] == "cancelled"


def test_a_question_that_times_out_delivers_its_run(allowed: httpx.Client) -> None:
    with Receiver().running() as receiver:
        created = allowed.post("/v1/runs", json={"pipeline": "impatient", "input": 0.2, "webhook": receiver.url})
        assert created.status_code == 201, created.text
        (delivery,) = receiver.wait_for(1)
    final = json.loads(delivery.body)
    assert delivery.run_id == created.json()["run_id"]
    assert final["status"] == "timed_out" and final["error"]["code"] == "timed_out"


def test_deleting_a_session_delivers_the_runs_it_cancels(allowed: httpx.Client) -> None:
    with Receiver().running() as receiver:
        first = allowed.post("/v1/runs", json={"pipeline": "nap", "input": {"seconds": 30}, "webhook": receiver.url})
        session_id = first.json()["session_id"]
        queued = {"pipeline": "nap", "input": {"seconds": 30}, "webhook": receiver.url, "session_id": session_id}
        second = allowed.post("/v1/runs", json=queued)
        assert second.status_code == 201, second.text
        assert allowed.delete(f"/v1/sessions/{session_id}").status_code == 204
        deliveries = receiver.wait_for(2)
    assert sorted(d.run_id for d in deliveries) == sorted([first.json()["run_id"], second.json()["run_id"]])
    assert {json.loads(d.body)["status"] for d in deliveries} == {"cancelled"}


REFUSED = [
    "http://10.0.0.1/hook",
    "http://[::1]:{port}/hook",
    "http://localhost:{port}/hook",
    "http://127.0.0.1:{port}/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://0.0.0.0:{port}/hook",
    "http://224.0.0.1/hook",
    "ftp://example.com/hook",
    "not a url",
]


@pytest.mark.parametrize("url", REFUSED)
def test_a_webhook_runyard_must_not_call_is_refused_and_nothing_is_created(
    serve: Serve, new_client: NewClient, url: str
) -> None:
    client = new_client(serve(webhook_secret=SECRET))  # no host allowed
    with Receiver().running() as receiver:
        for path in ("/v1/runs", "/v1/runs/wait", "/v1/runs/stream"):
            response = client.post(path, json={**NAP, "webhook": url.format(port=receiver.port)})
            assert_error(response, 422, "invalid_webhook")
    assert client.get("/v1/runs").json()["runs"] == []
    assert receiver.requests == 0


def test_a_host_in_the_allowance_is_called_only_under_its_own_name(allowed: httpx.Client) -> None:
    with Receiver().running() as receiver:
        response = allowed.post("/v1/runs", json={**NAP, "webhook": f"http://localhost:{receiver.port}/hook"})
        assert_error(response, 422, "invalid_webhook")  # 127.0.0.1 is allowed, localhost is not


def test_without_a_secret_a_webhook_is_refused(serve: Serve, new_client: NewClient) -> None:
    client = new_client(serve(webhook_allow_hosts="127.0.0.1"))
    body = assert_error(
        client.post("/v1/runs", json={**NAP, "webhook": "http://127.0.0.1:9/hook"}), 422, "invalid_webhook"
    )
    assert "RUNYARD_WEBHOOK_SECRET" in body["error"]["message"]
    assert client.get("/v1/runs").json()["runs"] == []


def test_a_run_without_a_webhook_needs_no_secret(client: httpx.Client) -> None:
    response = client.post("/v1/runs", json=NAP)
    assert response.status_code == 201, response.text
