"""``runyard loadtest``: passes on the real server, and names each way a server can break.

The broken servers are a small fake (``Broken``) that answers the same API as
runyard but breaks every run's stream in one chosen way: a lost event, a repeated
one, another user's tick, a failed run, an event after ``end``, a snapshot that
disagrees, a stream that never ends.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from runyard.cli import main
from tests.support import make_app, serve_asgi, serve_in_thread


def loadtest(url: str, *flags: str) -> int:
    return main(["loadtest", "--url", url, *flags])


def report_of(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


def found(report: dict[str, Any]) -> dict[str, int]:
    """The violations found, by kind."""
    return {kind: count for kind, count in report["violations_by_kind"].items() if count}


# -- against the real server ------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve_in_thread(make_app(store="memory://")) as url:
        yield url


def test_twenty_users_at_once_see_every_event_of_their_own_runs_once(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert loadtest(server, "--sessions", "20", "--events", "20", "--interval-ms", "5", "--json") == 0
    report = report_of(capsys)
    assert report["ok"] is True
    assert report["violations_total"] == 0 and report["violations"] == [] and found(report) == {}
    totals = report["totals"]
    assert (totals["runs"], totals["runs_succeeded"], totals["ticks"]) == (20, 20, 400)
    assert totals["events"] == 20 * (20 + 3)  # status running, 20 ticks, status succeeded, end
    assert totals["events_per_s"] > 0 and totals["runs_per_s"] > 0
    tick = report["latency_ms"]["tick"]
    assert tick["count"] == 400 and 0 <= tick["p50"] <= tick["p90"] <= tick["p99"] <= tick["max"]
    assert report["latency_ms"]["create"]["count"] == 20
    assert report["config"] | {"url": None, "prefix": None} == {
        "url": None,
        "prefix": None,
        "sessions": 20,
        "events": 20,
        "interval_ms": 5,
        "duration_s": None,
        "timeout_s": 60.1,
        "owners": "one per session",
    }


def test_with_a_duration_each_user_keeps_one_session_and_sees_only_its_own_runs(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # 1.5 s: alone a session makes ~30 runs in 0.5 s, but a busy CI worker stalled one 0.5 s once
    flags = ["--sessions", "4", "--events", "5", "--interval-ms", "0", "--duration", "1.5", "--json"]
    assert loadtest(server, *flags) == 0
    report = report_of(capsys)
    prefix, runs = report["config"]["prefix"], report["totals"]["runs"]
    assert runs > 4  # several runs per session
    seen = 0
    for i in range(4):
        listed = httpx.get(f"{server}/v1/runs", params={"limit": 200}, headers={"X-Client-Id": f"{prefix}-{i}"})
        mine = listed.json()["runs"]
        assert len({run["session_id"] for run in mine}) == 1
        assert {run["input"]["marker"] for run in mine} == {f"{prefix}-s{i}"}
        seen += len(mine)
    assert seen == runs


def test_client_id_makes_every_session_one_owner(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    flags = ["--sessions", "3", "--events", "2", "--interval-ms", "0", "--client-id", "lt-one", "--json"]
    assert loadtest(server, *flags) == 0
    assert report_of(capsys)["config"]["owners"] == "shared"
    listed = httpx.get(f"{server}/v1/runs", headers={"X-Client-Id": "lt-one"}).json()["runs"]
    assert len(listed) == 3 and len({run["session_id"] for run in listed}) == 3


def test_the_table_shows_totals_latency_and_the_verdict(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert loadtest(server, "--sessions", "3", "--events", "4", "--interval-ms", "0") == 0
    out = capsys.readouterr().out
    for text in ("3 sessions x 4 ticks", "runs", "events", "reconnects", "p99", "tick (sent → received)"):
        assert text in out
    assert "tick latency: arrival minus the tick's t (server clock); exact on loopback" in out
    assert out.rstrip().endswith("✓ no violations")


# -- against servers that break ------------------------------------------------------------


@dataclass
class Broken:
    """A fake runyard whose streams all break in the way ``fault`` names (None: they don't)."""

    fault: str | None = None
    pipelines: list[str] = field(default_factory=lambda: ["ticker"])
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    cursors: list[int] = field(default_factory=list)  # the Last-Event-ID of every stream request

    def log(self, run: dict[str, Any]) -> list[dict[str, Any]]:
        marker, count = run["input"]["marker"], run["input"]["count"]
        ticks = [("tick", {"marker": marker, "i": i, "pad": ""}) for i in range(count)]
        if self.fault == "leak":  # another user's tick written into this run's log, after its first tick
            others = [other["input"]["marker"] for other in self.runs.values() if other is not run]
            ticks.insert(1, ("tick", {"marker": others[-1] if others else "intruder", "i": 1, "pad": ""}))
        status, end = "succeeded", {"status": "succeeded", "output": {"marker": marker, "count": count}}
        if self.fault == "failed":
            status, end = "failed", {"status": "failed", "error": {"code": "pipeline_error", "message": "boom"}}
        steps = [("status", {"status": "running"}), *ticks, ("status", {"status": status}), ("end", end)]
        return [{"seq": seq, "type": kind, "data": data, "ts": None} for seq, (kind, data) in enumerate(steps, 1)]

    def sent(self, run: dict[str, Any], cursor: int) -> list[dict[str, Any]]:
        """What a stream connection starting after ``cursor`` delivers."""
        events = [event for event in self.log(run) if event["seq"] > cursor]
        if self.fault == "gap":
            events = [event for event in events if event["seq"] != 3]
        elif self.fault == "duplicate":
            events.insert(3, events[1])
        elif self.fault == "after_end":
            events.append({**events[-1], "seq": events[-1]["seq"] + 1})
        elif self.fault == "drop_once" and cursor == 0:
            events = events[:3]  # then the server closes the stream, as a restart would
        return events

    def snapshot(self, run: dict[str, Any], status: str) -> dict[str, Any]:
        log = self.log(run) if status != "queued" else []
        end = log[-1]["data"] if log else {}
        if self.fault == "stale_snapshot":
            end = {"status": "running"}
        return {
            "run_id": run["run_id"],
            "session_id": run["session_id"],
            "pipeline": "ticker",
            "status": end.get("status", status),
            "input": run["input"],
            "output": end.get("output"),
            "error": end.get("error"),
            "last_seq": log[-1]["seq"] if log else 0,
        }

    def app(self) -> Starlette:
        async def create(request: Request) -> Response:
            body = await request.json()
            run_id = f"run_{len(self.runs) + 1}"
            session_id = body.get("session_id") or f"ses_{run_id}"
            if self.fault == "quota":
                return JSONResponse({"error": {"code": "quota_exceeded", "message": "5 runs is the quota"}}, 429)
            if self.fault == "new_session":  # session_id ignored: every run in a session of its own
                session_id = f"ses_{run_id}"
            self.runs[run_id] = {"run_id": run_id, "session_id": session_id, "input": body["input"]}
            return JSONResponse(self.snapshot(self.runs[run_id], "queued"), 201)

        async def snapshot(request: Request) -> Response:
            return JSONResponse(self.snapshot(self.runs[request.path_params["run_id"]], "succeeded"))

        async def stream(request: Request) -> Response:
            run = self.runs[request.path_params["run_id"]]
            cursor = int(request.headers.get("last-event-id", "0"))
            self.cursors.append(cursor)
            return StreamingResponse(self.frames(run, cursor), media_type="text/event-stream")

        async def pipelines(request: Request) -> Response:
            return JSONResponse({"pipelines": [{"name": name} for name in self.pipelines]})

        routes = [
            Route("/v1/runs", create, methods=["POST"]),
            Route("/v1/runs/{run_id}", snapshot),
            Route("/v1/runs/{run_id}/stream", stream),
            Route("/v1/pipelines", pipelines),
        ]
        return Starlette(routes=routes)

    async def frames(self, run: dict[str, Any], cursor: int) -> AsyncIterator[bytes]:
        if self.fault == "hang":  # running, then nothing but heartbeats
            yield b'id: 1\nevent: status\ndata: {"seq":1,"type":"status","data":{"status":"running"}}\n\n'
            while True:
                await asyncio.sleep(0.05)
                yield b": ping\n\n"
        for event in self.sent(run, cursor):
            if event["type"] == "tick":
                event = {**event, "data": {**event["data"], "t": time.time()}}
            yield f"id: {event['seq']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


@pytest.fixture
def broken() -> Iterator[tuple[Broken, str]]:
    fake = Broken()
    with serve_asgi(fake.app()) as url:
        yield fake, url


SMALL = ["--sessions", "3", "--events", "4", "--interval-ms", "0"]


@pytest.mark.parametrize(
    ("fault", "kind", "detail"),
    [
        ("gap", "gap", "seq 3 missing"),
        ("duplicate", "duplicate", "seq 2 (tick) after seq 3"),
        ("leak", "foreign_marker", "seq 3 carries marker"),
        ("failed", "run_failed", 'ended failed: {"code":"pipeline_error","message":"boom"}'),
        ("after_end", "event_after_end", "seq 8 (end) after the end at seq 7"),
        ("stale_snapshot", "snapshot_mismatch", "status 'running', not 'succeeded'"),
    ],
)
def test_each_broken_stream_is_one_named_violation_per_run_and_exit_1(
    broken: tuple[Broken, str], capsys: pytest.CaptureFixture[str], fault: str, kind: str, detail: str
) -> None:
    fake, url = broken
    fake.fault = fault
    assert loadtest(url, *SMALL, "--json") == 1
    report = report_of(capsys)
    assert report["ok"] is False
    assert found(report) == {kind: 3} == {kind: report["violations_total"]}
    assert {v["session"] for v in report["violations"]} == {0, 1, 2}
    assert all(detail in v["detail"] and v["run_id"].startswith("run_") for v in report["violations"])


def test_later_runs_put_in_another_session_are_named(
    broken: tuple[Broken, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = broken
    fake.fault = "new_session"
    assert loadtest(url, *SMALL, "--duration", "0.3", "--json") == 1
    report = report_of(capsys)
    assert found(report) == {"session_mismatch": report["totals"]["runs"] - 3}
    assert "created in session ses_run_" in report["violations"][0]["detail"]


def test_a_refused_run_is_an_http_error_and_ends_its_session(
    broken: tuple[Broken, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = broken
    fake.fault = "quota"
    assert loadtest(url, *SMALL, "--duration", "5", "--json") == 1
    report = report_of(capsys)
    assert found(report) == {"http_error": 3} and report["totals"]["runs"] == 0
    assert report["violations"][0] | {"session": 0} == {
        "kind": "http_error",
        "session": 0,
        "run_id": None,
        "detail": "POST /v1/runs: 429 quota_exceeded: 5 runs is the quota",
    }


def test_the_table_names_the_violation(broken: tuple[Broken, str], capsys: pytest.CaptureFixture[str]) -> None:
    fake, url = broken
    fake.fault = "leak"
    assert loadtest(url, *SMALL) == 1
    out = capsys.readouterr().out
    assert "foreign_marker" in out and "carries marker" in out
    assert out.rstrip().endswith("✗ 3 violations")


def test_a_dropped_stream_resumes_after_the_last_event_seen(
    broken: tuple[Broken, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = broken
    fake.fault = "drop_once"
    assert loadtest(url, *SMALL, "--json") == 0
    report = report_of(capsys)
    assert report["totals"]["reconnects"] == 3 and report["totals"]["ticks"] == 12
    assert sorted(fake.cursors) == [0, 0, 0, 3, 3, 3]


def test_a_stream_that_never_ends_is_a_timeout_and_the_command_stops(
    broken: tuple[Broken, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = broken
    fake.fault = "hang"
    began = time.monotonic()
    assert loadtest(url, *SMALL, "--timeout", "0.5", "--json") == 1
    assert time.monotonic() - began < 5
    report = report_of(capsys)
    assert found(report) == {"timeout": 3}
    assert report["violations"][0]["detail"] == "no end event within 0.5 s (last seq 1)"


# -- usage -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--sessions", "0"], "--sessions must be at least 1"),
        (["--events", "1000001"], "--events must be between 0 and 1000000"),
        (["--interval-ms", "-1"], "--interval-ms must be between 0 and 60000"),
        (["--duration", "0"], "--duration must be positive"),
        (["--sessions", "many"], "invalid int value: 'many'"),
    ],
)
def test_bad_flags_exit_2(capsys: pytest.CaptureFixture[str], flags: list[str], message: str) -> None:
    assert loadtest("http://127.0.0.1:9", *flags) == 2
    assert message in capsys.readouterr().err


def test_a_server_without_the_ticker_pipeline_is_a_usage_error(
    broken: tuple[Broken, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = broken
    fake.pipelines = ["chat"]
    assert loadtest(url, *SMALL) == 2
    assert f"the server at {url} has no ticker pipeline" in capsys.readouterr().err
    assert fake.runs == {}


def test_no_server_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert loadtest("http://127.0.0.1:9", *SMALL) == 1
    assert capsys.readouterr().err.startswith("runyard: error: cannot reach the server at http://127.0.0.1:9")
