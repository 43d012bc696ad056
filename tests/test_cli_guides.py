"""The CLI guides a new user (issue 16): each test is one of the dead ends it reported."""

from __future__ import annotations

import argparse
import asyncio
import io
import socket
from collections.abc import Iterator

import httpx
import pytest
from rich.console import Console

from runyard import loadtest
from runyard.cli import main
from runyard.cli_common import owner_hint
from runyard.client import APIError
from runyard.loadtest.live import LiveProgress
from tests.support import make_app, serve_in_thread

TICK = {"pipeline": "ticker", "input": {"marker": "m", "count": 1}}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve_in_thread(make_app(store="memory://")) as url:
        yield url


def test_serve_on_a_port_in_use_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    """It was uvicorn's raw 'address already in use', after the app had started."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["demo", "--port", str(port), "--store", "memory://"]) == 2
    assert capsys.readouterr().err == (
        f"runyard: error: port {port} on 127.0.0.1 is in use (another runyard demo or serve?):"
        " choose another with --port P (or RUNYARD_PORT)\n"
    )


def test_tail_with_nothing_listening_fails_at_once_naming_the_url(capsys: pytest.CaptureFixture[str]) -> None:
    """It retried silently for 28 s."""
    assert main(["tail", "run_1", "--url", "127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("runyard: error: cannot reach the server at http://127.0.0.1:9: ")
    assert "is it running?" in err


def test_tail_shows_a_run_as_run_does(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "research", "--input", '{"topic": "tides"}', "--url", server]) == 0
    run_id = capsys.readouterr().out.split()[1]
    assert main(["tail", run_id, "--url", server.removeprefix("http://")]) == 0  # host:port is enough
    tailed = capsys.readouterr().out
    assert tailed.startswith(f"run {run_id} · research · session ")
    assert "▸ plan started" in tailed and "✓ plan done (" in tailed and "✓ succeeded in " in tailed


def test_a_pipeline_typo_gets_did_you_mean(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "tikcer", "--input", "{}", "--url", server]) == 2
    assert capsys.readouterr().err == (
        "runyard: error: no pipeline named 'tikcer'; did you mean 'ticker'? (404 pipeline_not_found)\n"
    )
    answer = httpx.post(server + "/v1/runs", json={"pipeline": "tikcer", "input": {}})
    assert answer.json()["error"]["suggestions"] == ["ticker"]


def test_another_owners_run_is_a_404_that_says_how_owners_work(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`runyard tail <a run from the page>` was a bare 404: the page has a client id of its own."""
    created = httpx.post(server + "/v1/runs", json=TICK, headers={"X-Client-Id": "page"}).json()
    assert main(["tail", created["run_id"], "--url", server]) == 2
    err = capsys.readouterr().err
    assert f"no run '{created['run_id']}' (a run is visible only to its owner: the X-Client-Id" in err
    assert "asked as 'anonymous' (no --client-id): runs and sessions are visible only to their owner" in err
    assert "pass --client-id OWNER (or set RUNYARD_CLIENT_ID)" in err
    assert main(["tail", created["run_id"], "--url", server, "--client-id", "page"]) == 0


def test_the_same_404_for_a_run_that_does_not_exist_leaks_nothing(server: str) -> None:
    mine = httpx.post(server + "/v1/runs", json=TICK).json()["run_id"]
    theirs = httpx.get(f"{server}/v1/runs/{mine}", headers={"X-Client-Id": "someone-else"}).json()
    missing = httpx.get(f"{server}/v1/runs/run_00000000000000000000000000000000").json()
    assert theirs["error"]["message"].replace(mine, "ID") == missing["error"]["message"].replace(
        "run_00000000000000000000000000000000", "ID"
    )


def test_a_streamed_reply_is_not_printed_twice(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "chat", "--input", '{"message": "my name is Ada"}', "--url", server]) == 0
    out = capsys.readouterr().out
    reply = out.split("\n", 2)[2].split("\n✓ succeeded", 1)[0]  # the streamed text, after the header and status
    assert reply.strip() and out.count(reply.strip()) == 1
    assert "(reply: the text streamed above)" in out and '"turns": 1' in out


# -- loadtest: live progress on a terminal, nothing extra in a pipe ---------------------------


def test_loadtest_shows_live_progress_on_a_terminal(server: str) -> None:
    """`runyard loadtest --duration 15` printed nothing until it ended."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160)
    config = loadtest.Config(url=server, sessions=3, events=5, interval_ms=20, duration_s=0.6)
    seen: list[str] = []
    with LiveProgress(console, config) as live:

        def watch(tally: loadtest.Tally, elapsed_s: float) -> None:
            live(tally, elapsed_s)
            seen.append(live.figures(tally, elapsed_s))

        report = asyncio.run(loadtest.run(config, watch=watch))
    assert report["ok"] is True
    assert len(seen) >= 3 and seen[0].startswith("runs ") and seen[-1].endswith("[green]0 violations[/green]")
    runs = report["totals"]["runs"]
    assert f"runs {runs} started, {runs} done" in seen[-1]
    assert "━" in out.getvalue() and "events/s" in out.getvalue()  # drawn while it ran


def test_loadtest_in_a_pipe_prints_the_report_alone(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loadtest", "--url", server, "--sessions", "2", "--events", "3", "--interval-ms", "0"]) == 0
    assert "started," not in capsys.readouterr().out


def test_the_owner_hint_names_the_identity_asked_as_and_says_nothing_of_others() -> None:
    missing = APIError(404, "run_not_found", "no run")
    assert owner_hint(missing, argparse.Namespace(client_id="cli", token=None)).startswith("; asked as 'cli'")
    with_token = owner_hint(missing, argparse.Namespace(client_id=None, token="x.y.z"))
    assert with_token == "; asked as the subject of --token, who sees only their own runs and sessions"
    assert owner_hint(APIError(404, "pipeline_not_found", "no"), argparse.Namespace(client_id=None, token=None)) == ""
