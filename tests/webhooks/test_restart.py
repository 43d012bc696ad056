"""A delivery owed survives its process: one ``runyard`` process on a SQLite file
finishes a run whose receiver is down, stops, and once restarted delivers it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from runyard.webhooks import verify_signature
from tests.http.test_system import sample
from tests.remote import OWNER
from tests.support import ServerProcess, free_port
from tests.webhooks.receiver import Receiver

pytestmark = [pytest.mark.server, pytest.mark.slow]

SECRET = "whsec_test"


def wait_for_failed_attempt(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = httpx.get(f"{url}/metrics").text
        if (sample(text, "runyard_webhook_deliveries_total", result="failed") or 0) >= 1:
            return
        time.sleep(0.05)
    raise AssertionError("no failed delivery attempt")


def test_a_receiver_down_across_a_restart_gets_the_delivery_after_it(tmp_path: Path) -> None:
    env = {
        "RUNYARD_STORE": f"sqlite:///{tmp_path / 'runyard.db'}",
        "RUNYARD_WEBHOOK_SECRET": SECRET,
        "RUNYARD_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
    }
    receiver = Receiver(free_port())  # not listening yet: down
    server = ServerProcess(env).start()
    try:
        body = {"pipeline": "nap", "input": {"seconds": 0}, "webhook": receiver.url}
        created = httpx.post(f"{server.url}/v1/runs", json=body, headers=OWNER)
        assert created.status_code == 201, created.text
        run_id = created.json()["run_id"]
        wait_for_failed_attempt(server.url)
    finally:
        server.stop()
    with receiver.running():
        restarted = ServerProcess(env).start()
        try:
            (delivery,) = receiver.wait_for(1)
        finally:
            restarted.stop()
    assert len(receiver.delivered) == 1
    assert delivery.run_id == run_id
    assert verify_signature(delivery.body, delivery.signature, SECRET)
    assert json.loads(delivery.body)["status"] == "succeeded"
