"""Disk use seen from the API: ``RUNYARD_MAX_RUN_BYTES`` ends a run that would store
too much ``failed`` with ``too_large``, its end recorded, and the server carries on."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.http.conftest import NewClient, Serve
from tests.http.helpers import all_events, assert_well_formed_log, ticker, wait_finished

CAP = 256 * 1024  # bytes of events a run may store here
PAD = 4096  # bytes of each tick's pad: the ticker below would store 200 x ~4 KiB = ~800 KiB


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_ticker_past_max_run_bytes_ends_failed_too_large_with_its_end_event(
    serve: Serve, new_client: NewClient, tmp_path: Path, store: str
) -> None:
    """Regression (issue 10, disk): one anonymous ticker run (1,000,000 x 64 KiB, within
    the contract's limits) wrote 137 MiB/s with nothing to stop it."""
    url = serve(store="memory://" if store == "memory" else f"sqlite:///{tmp_path}/t.db", max_run_bytes=CAP)
    client = new_client(url)

    run = wait_finished(client, ticker(client, count=200, payload_bytes=PAD)["run_id"])

    assert run["status"] == "failed"
    assert run["error"]["code"] == "too_large"
    events = all_events(client, run["run_id"])
    assert_well_formed_log(events)
    assert events[-1]["data"] == {"status": "failed", "error": run["error"]}
    ticks = [event for event in events if event["type"] == "tick"]
    assert 0 < len(ticks) < 200
    assert len(ticks) * PAD <= CAP
    # the server is healthy and other runs go on
    assert client.get("/healthz").status_code == 200
    assert wait_finished(client, ticker(client, count=3, payload_bytes=PAD)["run_id"])["status"] == "succeeded"
