"""``runyard tail --session ID`` against a real server: one line per event of
every run of the session, live, exiting 0 once the session is deleted."""

from __future__ import annotations

import subprocess
import sys

import pytest

from runyard.cli import main
from runyard.client import Client
from tests.support import make_app, serve_in_thread


def test_tail_session_prints_every_run_and_exits_when_the_session_is_deleted() -> None:
    with serve_in_thread(make_app(store="memory://", drain_s=0.2)) as url, Client(url, client_id="cli") as client:
        session_id = client.create_session()["session_id"]
        runs = [client.create("ticker", {"marker": "m", "count": 2}, session_id=session_id) for _ in range(2)]
        for run in runs:
            client.wait(run["run_id"], timeout=10)
        expected = [
            f"{run['run_id']} {event['seq']} {event['type']}"
            for run in runs
            for event in client.events(run["run_id"])["events"]
        ]
        command = [sys.executable, "-m", "runyard", "tail", "--session", session_id, "--url", url, "--client-id", "cli"]
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as tail:
            assert tail.stdout is not None
            lines = [tail.stdout.readline() for _ in expected]
            client.delete_session(session_id)
            assert tail.wait(timeout=20) == 0
    assert [" ".join(line.split(" ")[:3]) for line in lines] == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tail"], "tail takes a RUN_ID or --session ID"),
        (["tail", "run_1", "--session", "s"], "tail takes a RUN_ID or --session ID"),
        (["tail", "run_1", "--after", "x"], "'x' is not a non-negative integer"),
    ],
)
def test_tail_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--url", "http://127.0.0.1:9"]) == 2
    assert message in capsys.readouterr().err
