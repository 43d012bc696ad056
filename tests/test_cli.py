"""The ``runyard`` command: its flags, and ``run``/``tail`` against a real (fake) server."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
from rich.console import Console

import runyard
from runyard import Runyard
from runyard.cli import SETTING, build_parser, main, settings_from
from runyard.cli_view import RunView
from runyard.settings import Settings, redact_url
from tests.test_client import FakeServer, Fault

SRC = Path(runyard.__file__).resolve().parent.parent


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Runyard]:
    """What ``runyard.server.serve`` was asked to serve (nothing is served)."""
    apps: list[Runyard] = []
    monkeypatch.setattr("runyard.server.serve", apps.append)
    return apps


# settings whose values have a form of their own (issue 16: the operations console)
FORMED_SAMPLES: dict[str, str | bool] = {
    "prices": '{"m": {"input_per_mtok": 1, "output_per_mtok": 2}}',
    "trace_url": "http://x-host/trace/{trace_id}",
    "playground": True,  # a switch: --playground / --no-playground
}


def sample(name: str) -> str | bool:
    """A valid value for setting ``name``, other than its default where that is easy."""
    field = Settings.model_fields[name]
    if name in FORMED_SAMPLES:
        return FORMED_SAMPLES[name]
    if name in ("store", "broker"):  # shared ones, which every role accepts
        return {"store": "postgresql://x-host/x-db", "broker": "redis://x-host:6379/0"}[name]
    if get_origin(field.annotation) is Literal:
        return str(get_args(field.annotation)[-1])
    if field.annotation == int | None:
        return "7"
    if field.annotation in (int, float):
        return str(int(field.default) + 1) if name != "port" else "8123"
    return f"x-{name}"


# -- settings flags ----------------------------------------------------------------------


@pytest.mark.parametrize("command", [["demo"], ["serve", "app:app"], ["worker", "app:app"]])
def test_every_setting_is_a_flag_that_reaches_settings(command: list[str]) -> None:
    argv = [*command]
    for name in Settings.model_fields:
        value = sample(name)
        argv += ["--" + name.replace("_", "-")] + ([] if isinstance(value, bool) else [value])
    args = build_parser().parse_args(argv)
    samples = {name: sample(name) for name in Settings.model_fields}
    assert {name: getattr(args, SETTING + name) for name in samples} == samples
    assert settings_from(args) == Settings(**samples)  # type: ignore[arg-type]


def test_every_setting_flag_is_documented_with_its_variable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--help"]) == 0
    usage = capsys.readouterr().out
    for name in Settings.model_fields:
        assert f"--{name.replace('_', '-')}" in usage
        assert f"RUNYARD_{name.upper()}" in usage


def test_migrate_takes_only_the_store_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert settings_from(build_parser().parse_args(["migrate", "--store", "memory://"])).store == "memory://"
    assert main(["migrate", "--port", "1"]) == 2
    assert "unrecognized arguments: --port" in capsys.readouterr().err


def test_a_flag_overrides_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNYARD_PORT", "9000")
    monkeypatch.setenv("RUNYARD_STORE", "memory://")
    parse = build_parser().parse_args
    assert settings_from(parse(["demo", "--port", "9100"])).port == 9100
    assert settings_from(parse(["demo"])).port == 9000
    assert settings_from(parse(["demo", "--store", "sqlite:///x.db"])).store == "sqlite:///x.db"
    assert settings_from(parse(["demo"])).store == "memory://"
    assert getattr(parse(["demo"]), SETTING + "port") is None


def test_bad_setting_values_are_one_line_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], served: list[Runyard]
) -> None:
    assert main(["demo", "--port", "abc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("runyard: error: invalid --port 'abc': Input should be a valid integer")
    assert err.count("\n") == 1

    monkeypatch.setenv("RUNYARD_MAX_CONCURRENT_RUNS", "0")
    assert main(["demo"]) == 2
    assert "invalid RUNYARD_MAX_CONCURRENT_RUNS '0': Input should be greater than or equal to 1" in (
        capsys.readouterr().err
    )
    assert main(["demo", "--max-concurrent-runs", "2", "--log-format", "xml"]) == 2
    assert "invalid choice: 'xml'" in capsys.readouterr().err
    assert served == []


def test_admin_subjects_under_auth_none_refuse_to_start(
    app_dir: Path, capsys: pytest.CaptureFixture[str], served: list[Runyard]
) -> None:
    """Issue 10, "anyone can be admin without auth": under RUNYARD_AUTH=none the owner is
    whatever X-Client-Id says, so RUNYARD_ADMIN_SUBJECTS let anyone list every owner's runs.
    Now the server refuses to start, and says why."""
    assert main(["serve", "cli_test_app:app", "--store", "memory://", "--admin-subjects", "root"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("runyard: error: invalid settings: RUNYARD_ADMIN_SUBJECTS needs RUNYARD_AUTH=jwt")
    assert "X-Client-Id" in err and err.count("\n") == 1
    assert served == []

    jwt = ["--auth", "jwt", "--jwt-secret", "s3cret-for-tests-only-0123456789abcdef"]
    assert main(["serve", "cli_test_app:app", "--store", "memory://", "--admin-subjects", "root", *jwt]) == 0
    assert [app.settings.admin_subject_set for app in served] == [frozenset({"root"})]


# -- demo, serve, worker, migrate ------------------------------------------------------------


def test_demo_serves_the_demo_app_with_the_flags(monkeypatch: pytest.MonkeyPatch, served: list[Runyard]) -> None:
    from runyard.demo import app

    monkeypatch.setattr(app, "settings", app.settings)  # restored afterwards
    assert main(["demo", "--host", "0.0.0.0", "--port", "8125", "--store", "memory://"]) == 0
    assert served == [app]
    assert (app.settings.host, app.settings.port, app.settings.store) == ("0.0.0.0", 8125, "memory://")


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "cli_test_app.py").write_text("from runyard import Runyard\napp = Runyard()\nnumber = 3\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "cli_test_app", raising=False)
    return tmp_path


def test_serve_imports_the_app_from_the_working_directory(app_dir: Path, served: list[Runyard]) -> None:
    assert main(["serve", "cli_test_app:app", "--port", "8126", "--store", "memory://"]) == 0
    assert [type(app) for app in served] == [Runyard]
    assert (served[0].settings.port, served[0].settings.store) == (8126, "memory://")
    assert sys.modules["cli_test_app"].app is served[0]


SHARED = ["--store", "postgresql://db-host/runyard", "--broker", "redis://redis-host:6379/0"]


@pytest.mark.parametrize(
    ("argv", "role"),
    [
        (["serve", "cli_test_app:app", "--role", "api", *SHARED], "api"),
        (["serve", "cli_test_app:app", "--role", "worker", *SHARED], "worker"),
        (["worker", "cli_test_app:app", *SHARED], "worker"),
        (["worker", "cli_test_app:app", "--role", "api", *SHARED], "worker"),
    ],
)
def test_roles_are_served_on_a_shared_store_and_broker(
    app_dir: Path, served: list[Runyard], argv: list[str], role: str
) -> None:
    assert main(argv) == 0
    assert [app.settings.role for app in served] == [role]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "cli_test_app"], "APP must be module:attribute (e.g. myapp:app), not 'cli_test_app'"),
        (["serve", "no_such_module:app"], "cannot import 'no_such_module': no such module"),
        (["serve", "cli_test_app:missing"], "module 'cli_test_app' has no attribute 'missing'"),
        (["serve", "cli_test_app:number"], "cli_test_app:number is a int, not a runyard.Runyard"),
        (["serve", "cli_test_app:app", "--role", "api"], "role api needs a store and a broker shared"),
        (["serve", "cli_test_app:app", "--role", "worker", "--store", "sqlite:///x.db"], "role worker needs a store"),
        (["worker", "cli_test_app:app", "--broker", "local://"], "role worker needs a store and a broker shared"),
        # issue 10: leases a renewal cannot keep are refused at start-up, saying why
        (["serve", "cli_test_app:app", "--lease-s", "0.5"], "RUNYARD_LEASE_S (--lease-s) of 0.5 s is too short"),
        (["serve", "cli_test_app:app", "--limit-lease-s", "0.2"], "RUNYARD_LIMIT_LEASE_S (--limit-lease-s) of 0.2 s"),
    ],
)
def test_serve_usage_errors(
    app_dir: Path, served: list[Runyard], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert served == []


def test_migrate_reports_the_schema_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "--store", "memory://"]) == 0
    assert capsys.readouterr().out == "memory://: schema version 1\n"
    url = f"sqlite:///{tmp_path}/m.db"
    assert main(["migrate", "--store", url]) == 0
    assert capsys.readouterr().out.startswith(f"{url}: schema version ")
    assert (tmp_path / "m.db").exists()


def test_migrate_with_an_unknown_store_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "--store", "mongo://db"]) == 2
    assert "unknown store URL 'mongo://db'" in capsys.readouterr().err


def test_store_urls_are_printed_without_their_password() -> None:
    assert redact_url("postgresql://u:secret@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert redact_url("sqlite:///./runyard.db") == "sqlite:///./runyard.db"


# -- run ---------------------------------------------------------------------------------------

STORY = {
    "events": [
        ["phase", {"name": "plan", "status": "started"}],
        ["phase", {"name": "plan", "status": "done"}],
        ["progress", {"current": 1, "total": 2, "fraction": 0.5, "message": "reading"}],
        ["token", {"text": "Hello, "}],
        ["token", {"text": "world"}],
        ["finding", {"url": "https://example.org/[bold]"}],
        ["progress", {"current": 2, "total": 2, "fraction": 1.0, "message": "reading"}],
    ],
    "output": {"answer": 42},
}


def run_cli(fake: FakeServer, *argv: str) -> int:
    return main([*argv, "--url", fake.url])


DURATION = re.compile(r"\d+(?:\.\d+)?s|\d+m\d\ds")


def untimed(line: str) -> str:
    """The line with its durations (``0.42s``, ``2m05s``) as ``T``: they differ from run to run."""
    return DURATION.sub("T", line)


def test_run_follows_the_run_and_prints_its_output(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(fake, "run", "script", "--input", json.dumps(STORY)) == 0
    lines = [untimed(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == "run run_1 · script · session ses_1"
    assert lines[1:9] == [
        "· running",
        "▸ plan started",
        "✓ plan done (T)",
        "progress 50% (1/2) reading",
        "Hello, world",
        'finding {"url":"https://example.org/[bold]"}',
        "progress 100% (2/2) reading",
        "✓ succeeded in T",
    ]
    assert json.loads("\n".join(lines[9:])) == {"answer": 42}


def test_run_resumes_after_drops_without_repeating_anything(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.state.faults = [Fault("abort", 4), Fault("close", 1)]
    assert run_cli(fake, "run", "script", "--input", json.dumps(STORY)) == 0
    out = capsys.readouterr().out
    assert out.count("Hello, world") == 1
    assert out.count("▸ plan started") == 1
    assert fake.state.connections == [0, 4, 5]


@pytest.mark.parametrize(
    ("run_input", "shown"),
    [
        ({"count": 3, "fail_at": 2}, ["✗ error pipeline_error: failed at tick 2", "✗ failed in T"]),
        ({"events": [], "status": "cancelled"}, ["✗ cancelled in T: cancelled: run cancelled"]),
        ({"events": [], "status": "timed_out"}, ["✗ timed_out in T: timed_out: run timed_out"]),
    ],
    ids=["failed", "cancelled", "timed_out"],
)
def test_run_exits_1_when_the_run_does_not_succeed(
    fake: FakeServer, capsys: pytest.CaptureFixture[str], run_input: dict[str, Any], shown: list[str]
) -> None:
    pipeline = "ticker" if "count" in run_input else "script"
    assert run_cli(fake, "run", pipeline, "--input", json.dumps(run_input)) == 1
    lines = [untimed(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[-len(shown) :] == shown


def test_run_with_input_that_is_not_json_exits_2(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(fake, "run", "ticker", "--input", "{count: 3}") == 2
    err = capsys.readouterr().err
    assert err == (
        "runyard: error: --input is not valid JSON: "
        "Expecting property name enclosed in double quotes (line 1 column 2)\n"
    )
    assert fake.state.runs == {}


def test_run_reads_input_from_a_file(fake: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in.json").write_text('{"count": 2}')
    assert run_cli(fake, "run", "ticker", "--input", f"@{tmp_path}/in.json") == 0
    assert run_cli(fake, "run", "ticker", "--input", f"@{tmp_path}/nope.json") == 2
    assert "cannot read --input file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("pipeline", "run_input", "message"),
    [
        ("nope", {}, "no pipeline named 'nope' (404 pipeline_not_found)"),
        ("ticker", {"count": "x"}, "input does not fit pipeline 'ticker': count: required (422 invalid_request)"),
        ("quota", {}, "5 runs is the quota (429 quota_exceeded)"),
    ],
)
def test_run_refused_by_the_server_exits_2_with_its_message(
    fake: FakeServer, capsys: pytest.CaptureFixture[str], pipeline: str, run_input: Any, message: str
) -> None:
    assert run_cli(fake, "run", pipeline, "--input", json.dumps(run_input)) == 2
    assert capsys.readouterr().err == f"runyard: error: {message}\n"


def test_run_sends_client_id_and_session_and_reads_the_url_from_the_environment(
    fake: FakeServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RUNYARD_URL", fake.url)
    assert main(["run", "ticker", "--input", '{"count": 1}', "--client-id", "erin"]) == 0
    assert fake.state.runs["run_1"].owner == "erin"
    assert main(["run", "ticker", "--input", '{"count": 1}', "--session", "ses_1"]) == 0
    assert fake.state.runs["run_2"].session_id == "ses_1"
    assert main(["run", "ticker", "--input", '{"count": 1}', "--session", "ses_404"]) == 2
    assert "no such session (404 session_not_found)" in capsys.readouterr().err


def test_run_against_no_server_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "ticker", "--input", "{}", "--url", "http://127.0.0.1:9"]) == 1
    assert capsys.readouterr().err.startswith("runyard: error: cannot reach the server at http://127.0.0.1:9")


def test_ctrl_c_cancels_the_run_and_exits_130(fake: FakeServer) -> None:
    command = [sys.executable, "-m", "runyard.cli", "run", "ticker", "--url", fake.url]
    command += ["--input", '{"count": 1000, "interval_ms": 20}']
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        while "tick" not in proc.stdout.readline():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "interrupted: cancelling run run_1" in err
    assert fake.state.cancels == ["run_1"]
    assert fake.state.runs["run_1"].status == "cancelled"


def test_on_a_terminal_progress_is_a_live_bar_and_output_is_highlighted_json() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, soft_wrap=True, markup=False, emoji=False)
    view = RunView(console, live=True)
    view.started({"run_id": "run_1", "pipeline": "script", "session_id": "ses_1"})
    for seq, (kind, data) in enumerate(STORY["events"], start=1):
        view.show({"seq": seq, "type": kind, "data": data, "ts": None})
        time.sleep(0.01)
    view.show({"seq": 9, "type": "token", "data": {"text": " again\nand more"}, "ts": None})
    view.show({"seq": 10, "type": "end", "data": {"status": "succeeded", "output": {"answer": 42}}, "ts": None})
    text = out.getvalue()
    assert view.status == "succeeded"
    assert "plan done" in text and "reading" in text and "━" in text  # the bar
    # While the bar is live, tokens come out a whole line at a time, above it.
    assert "Hello, world\n" in text and " again\n" in text and "and more\n" in text
    assert "\x1b[" in text and "answer" in text


# -- tail ----------------------------------------------------------------------------------------


def test_tail_prints_one_line_per_event_and_exits_by_status(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    from runyard.client import Client

    with Client(fake.url) as client:
        ok = client.create("ticker", {"count": 2, "interval_ms": 5})["run_id"]
        bad = client.create("ticker", {"count": 3, "fail_at": 1})["run_id"]
    fake.state.faults = [Fault("abort", 2)]
    assert run_cli(fake, "tail", ok, "--raw") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" ", 2)[:2] for line in lines] == [
        ["1", "status"],
        ["2", "tick"],
        ["3", "tick"],
        ["4", "status"],
        ["5", "end"],
    ]
    assert lines[1] == '2 tick {"i":0}'
    assert lines[4] == '5 end {"status":"succeeded","output":{"count":2}}'

    assert run_cli(fake, "tail", bad, "--after", "2", "--raw") == 1
    assert [line.split(" ")[0] for line in capsys.readouterr().out.splitlines()] == ["3", "4", "5"]


def test_tail_usage_errors(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(fake, "tail", "run_missing") == 2
    assert capsys.readouterr().err.startswith("runyard: error: no such run (404 run_not_found); asked as 'anonymous'")
    assert run_cli(fake, "tail", "run_1", "--after", "-1") == 2
    assert "'-1' is not a non-negative integer" in capsys.readouterr().err


def test_run_and_tail_against_the_runyard_server(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.support import make_app, serve_in_thread

    with serve_in_thread(make_app(store="memory://")) as url:
        assert main(["run", "research", "--input", '{"topic": "tides"}', "--url", url]) == 0
        out = capsys.readouterr().out
        assert main(["run", "boom", "--input", "{}", "--url", url]) == 1
        failed = capsys.readouterr().out
        run_id = out.split()[1]
        assert main(["tail", run_id, "--url", url, "--raw"]) == 0
        tailed = capsys.readouterr().out.splitlines()
    assert "▸ plan started" in out and "✓ write done (" in out and "✓ succeeded in " in out
    assert '"topic": "tides"' in out
    assert "✗ error pipeline_error" in failed and untimed(failed.rstrip()).endswith("✗ failed in T")
    assert tailed[0].startswith("1 status ") and tailed[-1].startswith(f"{len(tailed)} end ")


# -- waiting runs: run prompts, answer answers ------------------------------------------------

APPROVE = {"type": "object", "properties": {"approve": {"type": "boolean"}}, "required": ["approve"]}
ASKS = {"asks": [{"request": {"question": "approve?"}, "schema": APPROVE}, {"request": "and your name?"}]}


class Terminal(io.StringIO):
    """What a person types at a terminal, line by line."""

    def isatty(self) -> bool:
        return True


def test_run_prompts_for_each_answer_and_follows_the_run_to_its_end(
    fake: FakeServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    typed = ["yes please", '{"approve": "yes"}', '{"approve": true}', "Ada Lovelace"]
    monkeypatch.setattr(sys, "stdin", Terminal("".join(line + "\n" for line in typed)))
    assert run_cli(fake, "run", "asker", "--input", json.dumps(ASKS)) == 0
    out = capsys.readouterr().out
    assert [body for _, body in fake.state.answers] == [
        {"value": {"approve": True}, "ask_id": "ask_1"},
        {"value": "Ada Lovelace", "ask_id": "ask_2"},  # not JSON, and any answer will do: the text itself
    ]
    assert '· running\n? {"question":"approve?"}\n  answer with: {"approve": boolean}\nanswer> ' in out
    assert '✗ not valid JSON (Expecting value), and the answer must be {"approve": boolean}; try again' in out
    assert "✗ the answer does not fit the schema: approve: expected boolean; try again" in out
    assert "? and your name?\nanswer> " in out  # no schema: no shape to show
    assert out.count("✓ answer received") == 2
    assert out.rstrip().endswith('"answers": [\n    {\n      "approve": true\n    },\n    "Ada Lovelace"\n  ]\n}')


@pytest.mark.parametrize("stdin", [io.StringIO('{"approve": true}\n'), Terminal("")], ids=["not-a-tty", "eof"])
def test_run_with_no_one_to_answer_leaves_the_run_waiting_and_says_how_to_answer(
    fake: FakeServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], stdin: io.StringIO
) -> None:
    monkeypatch.setattr(sys, "stdin", stdin)
    assert run_cli(fake, "run", "asker", "--input", json.dumps(ASKS)) == 0
    out = capsys.readouterr().out
    hint = f"⏸ the run is waiting for input; answer it with: runyard answer run_1 --value JSON --url {fake.url}"
    assert out.rstrip().endswith(hint)
    assert fake.state.answers == []
    assert fake.state.runs["run_1"].status == "waiting"
    assert fake.state.cancels == []


def test_answer_posts_the_value_and_reports_the_run_queued(
    fake: FakeServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from runyard.client import Client

    with Client(fake.url) as client:
        run_id = client.create("asker", {"asks": [{"request": "approve?", "schema": APPROVE}] * 2})["run_id"]
        asked = client.snapshot(run_id)["waiting_for"]
    assert run_cli(fake, "answer", run_id, "--value", '{"approve": true}', "--ask-id", asked["ask_id"]) == 0
    assert capsys.readouterr().out == f"run {run_id} answered; now queued\n"
    (tmp_path / "answer.json").write_text('{"approve": false}')
    assert run_cli(fake, "answer", run_id, "--value", f"@{tmp_path}/answer.json") == 0
    assert [body for _, body in fake.state.answers] == [
        {"value": {"approve": True}, "ask_id": "ask_1"},
        {"value": {"approve": False}},
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--value", "yes"], "--value is not valid JSON: Expecting value (line 1 column 1)"),
        (
            ["--value", '{"approve": 1}'],
            "the answer does not fit the schema: approve: expected boolean (422 invalid_input)",
        ),
        (["--value", "true", "--ask-id", "ask_7"], "run run_1 waits for ask_1, not ask_7 (409 ask_mismatch)"),
    ],
    ids=["bad-json", "invalid-input", "ask-mismatch"],
)
def test_answer_refused_exits_2_with_one_clear_line(
    fake: FakeServer, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    from runyard.client import Client

    with Client(fake.url) as client:
        run_id = client.create("asker", {"asks": [{"request": "approve?", "schema": APPROVE}]})["run_id"]
    assert run_cli(fake, "answer", run_id, *argv) == 2
    assert capsys.readouterr().err == f"runyard: error: {message}\n"
    assert fake.state.answers == []


def test_answer_to_a_run_that_does_not_wait_exits_2(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    from runyard.client import Client

    with Client(fake.url) as client:
        run_id = client.create("ticker", {"count": 1})["run_id"]
    assert run_cli(fake, "answer", run_id, "--value", "1") == 2
    assert capsys.readouterr().err == f"runyard: error: run {run_id} is not waiting for input (409 run_not_waiting)\n"
    assert run_cli(fake, "answer", "run_missing", "--value", "1") == 2
    assert capsys.readouterr().err.startswith("runyard: error: no such run (404 run_not_found); asked ")


def test_the_view_shows_questions_their_shape_and_sleeps() -> None:
    out = io.StringIO()
    view = RunView(Console(file=out, width=200, soft_wrap=True, markup=False, emoji=False), live=False)
    schema = {
        "type": "object",
        "properties": {"plan": {"enum": ["a", "b"]}, "note": {"type": "string"}, "n": {"type": ["integer", "null"]}},
        "required": ["plan"],
    }
    events = [
        ("input.requested", {"ask_id": "ask_1", "request": "Which plan?", "schema": schema}),
        ("status", {"status": "waiting"}),
        ("input.received", {"ask_id": "ask_1"}),
        ("status", {"status": "queued"}),
        ("status", {"status": "waiting", "until": "2026-12-03T09:00:00Z"}),
    ]
    for seq, (kind, data) in enumerate(events, start=1):
        view.show({"seq": seq, "type": kind, "data": data, "ts": None})
    assert out.getvalue().splitlines() == [
        "? Which plan?",
        '  answer with: {"plan": "a" | "b", "note"?: string, "n"?: integer | null}',
        "✓ answer received",
        "· queued",
        "⏸ sleeping until 2026-12-03T09:00:00Z",
    ]


@pytest.mark.parametrize(
    ("line", "schema", "value"),
    [
        ('{"approve": true}', APPROVE, {"approve": True}),
        ("42", None, 42),
        ("hello there", None, "hello there"),
        ("hello there", {"type": "string"}, "hello there"),
        ('"quoted"', {"type": "string"}, "quoted"),
        ("b", {"enum": ["a", "b"]}, "b"),
        ("maybe", {"anyOf": [{"type": "boolean"}, {"type": "string"}]}, "maybe"),
    ],
)
def test_an_answer_is_json_or_else_text_where_text_may_answer(line: str, schema: Any, value: Any) -> None:
    from runyard.cli_ask import parse_answer

    assert parse_answer(line, schema) == value


@pytest.mark.parametrize("schema", [APPROVE, {"type": "integer"}, {"enum": [1, 2]}, {"$ref": "#/$defs/X"}])
def test_text_that_is_not_json_cannot_answer_a_schema_text_cannot_meet(schema: Any) -> None:
    from runyard.cli_ask import parse_answer

    with pytest.raises(ValueError, match="not valid JSON"):
        parse_answer("yes", schema)


def test_run_answer_and_tail_a_waiting_run_on_the_runyard_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support import make_app, serve_in_thread

    with serve_in_thread(make_app(store="memory://")) as url:
        monkeypatch.setattr(sys, "stdin", Terminal('{"ok": "sure"}\n{"ok": true}\n'))
        assert main(["run", "approve", "--input", '{"question": "ship it?"}', "--url", url]) == 0
        prompted = capsys.readouterr().out

        monkeypatch.setattr(sys, "stdin", io.StringIO(""))
        assert main(["run", "approve", "--input", '{"question": "and this?"}', "--url", url]) == 0
        left = capsys.readouterr().out
        run_id = left.split()[1]
        assert main(["answer", run_id, "--value", '{"ok": false}', "--url", url]) == 0
        answered = capsys.readouterr().out
        assert main(["tail", run_id, "--url", url, "--raw"]) == 0
        tailed = capsys.readouterr().out.splitlines()
    assert '? {"question":"ship it?"}\n  answer with: {"ok": boolean}\nanswer> ✗ ' in prompted
    assert "try again\nanswer> ✓ answer received\n" in prompted
    assert '"ok": true' in prompted and "✓ succeeded" in prompted
    assert left.rstrip().endswith(f"answer it with: runyard answer {run_id} --value JSON --url {url}")
    assert answered == f"run {run_id} answered; now queued\n"
    assert [line.split()[1] for line in tailed if line.split()[1].startswith("input.")] == [
        "input.requested",
        "input.received",
    ]
    assert tailed[-1].startswith(f"{len(tailed)} end ") and '"answer":{"ok":false}' in tailed[-1]
