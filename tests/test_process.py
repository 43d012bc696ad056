"""Whole server processes: restarts, ``kill -9``, memory under a reader that never reads."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.remote import OWNER, create, snapshot, stored_events, wait_until
from tests.support import REPO, ServerProcess, free_port

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/proc.db"


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


def start(servers: list[ServerProcess], db: str, **env: str) -> ServerProcess:
    server = ServerProcess({"RUNYARD_STORE": db, "RUNYARD_LEASE_S": "1", **env}).start()
    servers.append(server)
    return server


def test_a_restart_on_the_same_sqlite_file_keeps_every_finished_runs_events(
    servers: list[ServerProcess], db: str
) -> None:
    first = start(servers, db)
    runs = [create(first.url, "ticker", {"marker": f"keep-{i}", "count": 50 * (i + 1)}) for i in range(5)]
    before = {
        run_id: stored_events(first.url, wait_until(first.url, run_id, {"succeeded"})["run_id"]) for run_id in runs
    }
    first.stop()
    second = start(servers, db)
    for run_id, events in before.items():
        assert stored_events(second.url, run_id) == events
        assert snapshot(second.url, run_id)["status"] == "succeeded"


def test_a_second_process_on_the_same_sqlite_file_refuses_to_start_and_the_first_keeps_serving(
    servers: list[ServerProcess], db: str, tmp_path: Path
) -> None:
    """Regression: two processes started on one ./runyard.db (the README's example app
    beside the demo) claimed each other's runs and failed them (8 of 72 demo runs)."""
    first = start(servers, db)
    env = {**os.environ, "RUNYARD_STORE": db, "RUNYARD_PORT": str(free_port())}
    second = subprocess.run(
        [sys.executable, "-m", "runyard", "demo"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert second.returncode != 0
    assert f"SQLite database '{tmp_path}/proc.db' is already in use by another runyard process" in second.stderr
    assert "use PostgreSQL and Redis" in second.stderr
    run_id = create(first.url, "ticker", {"marker": "still-here", "count": 3})
    assert wait_until(first.url, run_id, {"succeeded", "failed"})["status"] == "succeeded"


@pytest.mark.parametrize(
    ("pipeline", "outcome"),
    [("nap", ("failed", "worker_lost", 1)), ("nap_retry", ("succeeded", None, 2))],
    ids=["no-retries-fails-worker-lost", "retries-queues-next-attempt"],
)
def test_a_run_whose_process_is_killed_ends_per_its_retry_policy(
    servers: list[ServerProcess], db: str, pipeline: str, outcome: tuple[str, str | None, int]
) -> None:
    first = start(servers, db)
    run_id = create(first.url, pipeline, {"seconds": 1.5})
    wait_until(first.url, run_id, {"running"})
    time.sleep(0.2)
    first.kill()
    second = start(servers, db)
    final = wait_until(second.url, run_id, {"succeeded", "failed", "cancelled", "timed_out"})
    status, error_code, attempt = outcome
    assert (final["status"], (final["error"] or {}).get("code"), final["attempt"]) == (status, error_code, attempt)
    events = stored_events(second.url, run_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "the log goes on with the next seq"
    assert [e["type"] for e in events].count("end") == 1 and events[-1]["type"] == "end"


def test_a_subscriber_that_never_reads_does_not_grow_server_memory(servers: list[ServerProcess], db: str) -> None:
    server = start(servers, db)
    rss = psutil.Process(server.proc.pid).memory_info  # type: ignore[union-attr]
    # ~64 MiB of events that one client asks for and never reads
    run_id = create(server.url, "ticker", {"marker": "hoard", "count": 1000, "payload_bytes": 65_536})
    wait_until(server.url, run_id, {"succeeded"}, timeout=120)
    baseline = rss().rss
    sockets = []
    for _ in range(4):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f"GET /v1/runs/{run_id}/stream HTTP/1.1\r\nHost: x\r\nX-Client-Id: remote\r\n\r\n".encode())
        sockets.append(sock)
    try:
        time.sleep(3)
        grown = rss().rss - baseline
        # each stalled stream may hold a page and a chunk, never the whole run: a server
        # that buffered for them would need 4 x 64 MiB; measured here ~41 MiB in all
        assert grown < 128 * 2**20, f"server grew {grown / 2**20:.0f} MiB for 4 stalled readers of a 64 MiB run"
        other = create(server.url, "ticker", {"marker": "meanwhile", "count": 20})
        assert wait_until(server.url, other, {"succeeded"}, timeout=10)["status"] == "succeeded"
    finally:
        for sock in sockets:
            sock.close()


def test_sigterm_ends_open_streams_at_once_and_leaves_nothing_running(servers: list[ServerProcess], db: str) -> None:
    server = start(servers, db, RUNYARD_DRAIN_S="1")
    run_id = create(server.url, "nap", {"seconds": 30})
    wait_until(server.url, run_id, {"running"})
    with httpx.stream("GET", f"{server.url}/v1/runs/{run_id}/stream", headers=OWNER, timeout=30) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("id: ")
        started = time.monotonic()
        assert server.proc is not None
        server.proc.terminate()
        for _ in lines:  # the server closes the stream; the client would resume elsewhere
            pass
        assert time.monotonic() - started < 5, "a stream held the shutdown up"
    # uvicorn re-raises the signal once it has shut down gracefully
    assert server.proc.wait(timeout=15) in (0, -signal.SIGTERM)
    restarted = start(servers, db)
    final = snapshot(restarted.url, run_id)
    assert (final["status"], final["attempt"]) in {("queued", 1), ("running", 1)}, "a drain never fails a run"


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_sigterm_of_a_server_running_a_pipeline_that_swallows_cancellation_exits(
    servers: list[ServerProcess], db: str, stop: signal.Signals
) -> None:
    """Issue 10: the process stopped listening but never exited. Now the pipeline
    gets ``RUNYARD_CANCEL_GRACE_S`` after the drain, its run is handed back, and
    the process exits (after Ctrl-C too, which asyncio.run would hang on, waiting
    for the abandoned task)."""
    server = start(servers, db, RUNYARD_DRAIN_S="0.5", RUNYARD_CANCEL_GRACE_S="0.5")
    run_id = create(server.url, "deaf", None)
    wait_until(server.url, run_id, {"running"})
    assert server.proc is not None
    terminated = time.monotonic()
    server.proc.send_signal(stop)
    assert server.proc.wait(timeout=15) in (0, -stop)
    # drain, the run's grace, then the grace for leftover tasks; under load, with slack
    assert time.monotonic() - terminated < 0.5 + 0.5 + 0.5 + 5
    restarted = start(servers, db, RUNYARD_DRAIN_S="0.5", RUNYARD_CANCEL_GRACE_S="0.5")
    final = snapshot(restarted.url, run_id)
    assert (final["status"], final["attempt"]) in {("queued", 1), ("running", 1)}, "handed back, not failed"


def test_two_hundred_stalled_readers_of_a_long_history_share_a_bounded_budget(
    servers: list[ServerProcess], db: str
) -> None:
    """Issue 10, hostile clients: each stream read history in pages of ~1 MiB
    (and a first page of 128 events, whatever their size) and held it while its
    client did not read: 2,000 streams of a 16 MB history took RSS to 2.2 GB.
    Pages now share one budget and a first page is 16 events: 200 readers that
    never read grew the server by ~60 MiB (402 MiB before)."""
    server = start(servers, db, RUNYARD_MAX_STREAMS_PER_OWNER="1000")
    rss = psutil.Process(server.proc.pid).memory_info  # type: ignore[union-attr]
    run_id = create(server.url, "ticker", {"marker": "crowd", "count": 400, "payload_bytes": 16_384})
    wait_until(server.url, run_id, {"succeeded"}, timeout=60)
    baseline = rss().rss
    sockets = []
    try:
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(f"GET /v1/runs/{run_id}/stream HTTP/1.1\r\nHost: x\r\nX-Client-Id: remote\r\n\r\n".encode())
            sockets.append(sock)
        for sock in sockets:  # every stream has read its first page and sent from it
            sock.settimeout(10)
            received = b""
            while b"\nid: " not in received:
                chunk = sock.recv(4096)
                assert chunk, "a stream ended early"
                received += chunk
        peak = max(rss().rss for _ in range(20))  # sampled while they sit stalled
        grown = peak - baseline
        assert grown < 160 * 2**20, f"server grew {grown / 2**20:.0f} MiB for 200 stalled readers"
    finally:
        for sock in sockets:
            sock.close()
