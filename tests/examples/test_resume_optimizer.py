"""examples/resume_optimizer: a long pipeline (shortened by RESUME_OPTIMIZER_SECONDS)
with frequent progress, followed by reconnecting with Last-Event-ID or by polling,
5 free runs per browser client id, events that cross a 4 KB buffering proxy
in real time only thanks to padding, and five durable stages: a server killed
(``kill -9``) in stage 3 and restarted on its SQLite file resumes the run at
stage 3, without calling the LLM again for stages 1 and 2."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.resume_optimizer.app import Config, build_app, parse_resume
from examples.resume_optimizer.buffering_proxy import BufferingProxy
from examples.resume_optimizer.fake_llm import FakeLLM
from runyard import Settings
from tests.examples._runs import (
    Event,
    all_events,
    assert_complete_log,
    create,
    of_type,
    owner,
    snapshot,
    wait_finished,
)
from tests.governance.support import wait_until
from tests.sse_reader import frames
from tests.support import ServerProcess, serve_asgi, serve_in_thread

pytestmark = pytest.mark.server

SAMPLE = json.loads((Path(__file__).parents[2] / "examples" / "resume_optimizer" / "sample_input.json").read_text())
SETTINGS = Settings(store="memory://", drain_s=0.2)
SHORT_S = 1.5  # what the tests set RESUME_OPTIMIZER_SECONDS to
SLOW_S = 40.0  # a run whose steps outlast a second, and whose events trickle out slowly


def ts(event: Event) -> float:
    return datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def llm_url() -> Iterator[str]:
    with serve_asgi(FakeLLM().asgi()) as url:
        yield f"{url}/v1"


def app_for(llm_url: str, seconds: float, **settings: Any) -> Any:
    """The example's app as ``runyard serve`` would build it, from its environment variables."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RESUME_OPTIMIZER_SECONDS", str(seconds))
        env.setenv("RESUME_OPTIMIZER_LLM_URL", llm_url)
        return build_app(settings=SETTINGS.model_copy(update=settings))


@pytest.fixture(scope="module")
def server(llm_url: str) -> Iterator[str]:
    with serve_in_thread(app_for(llm_url, SHORT_S)) as url:
        yield url


@pytest.fixture(scope="module")
def slow_server(llm_url: str) -> Iterator[str]:
    with serve_in_thread(app_for(llm_url, SLOW_S)) as url:
        yield url


@pytest.fixture
async def client(server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        yield http


def test_a_run_lasts_four_minutes_unless_the_environment_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESUME_OPTIMIZER_SECONDS", raising=False)
    assert Config.from_env().seconds == 240
    app = build_app(settings=SETTINGS)
    timeout = app.pipelines["optimize"].timeout_s
    assert timeout is not None and timeout > 240  # the timeout leaves room for the run's own length


async def test_the_pipeline_goes_through_its_five_stages_reporting_progress_all_along(
    client: httpx.AsyncClient,
) -> None:
    started = time.monotonic()
    response = await client.post("/v1/runs/wait", json={"pipeline": "optimize", "input": SAMPLE}, headers=owner("ada"))
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    events = await all_events(client, "ada", response.json()["run_id"])
    output = assert_complete_log(events)

    assert SHORT_S <= elapsed < SHORT_S + 3  # RESUME_OPTIMIZER_SECONDS sets how long it takes
    phases = [(p["name"], p["status"]) for p in of_type(events, "phase")]
    stages = ["parse", "analyze", "rewrite", "tailor", "score"]
    assert phases == [(stage, status) for stage in stages for status in ("started", "done")]
    progress = [event for event in events if event["type"] == "progress"]
    steps = progress[0]["data"]["total"]
    assert [p["data"]["current"] for p in progress] == list(range(1, steps + 1))  # every step, in order
    assert progress[-1]["data"]["fraction"] == 1.0
    assert max(ts(b) - ts(a) for a, b in itertools.pairwise(progress)) < 1.0

    assert of_type(events, "step") == [
        {"name": stage, "n": 1, "status": status} for stage in stages for status in ("started", "done")
    ]
    assert output["score_after"] > output["score_before"]
    assert "Owned the billing service" in output["optimized_resume"]
    assert output["missing_keywords"] == ["FastAPI", "Kubernetes", "Docker", "Kafka", "Terraform", "observability"]
    assert "".join(token["text"] for token in of_type(events, "token")) == output["summary"]


async def test_progress_comes_at_least_every_second_even_while_a_step_takes_longer(slow_server: str) -> None:
    async with httpx.AsyncClient(base_url=slow_server, timeout=30) as client:
        run = await create(client, "patient", "optimize", SAMPLE)
        await asyncio.sleep(3.2)
        await client.post(f"/v1/runs/{run['run_id']}/cancel", headers=owner("patient"))
        events = await all_events(client, "patient", run["run_id"])
    progress = [event for event in events if event["type"] == "progress"]
    step_s = SLOW_S / progress[0]["data"]["total"]
    assert step_s > 1.5  # each step of this run lasts longer than a second...
    assert len(progress) >= 3
    gaps = [ts(b) - ts(a) for a, b in itertools.pairwise(progress)]
    assert max(gaps) < 1.5  # ...yet progress arrived about every second
    assert any(p["data"]["current"] % 1 for p in progress)  # fractions of a step


async def test_a_dropped_stream_resumes_with_last_event_id_without_a_gap_or_a_repeat(
    client: httpx.AsyncClient,
) -> None:
    run = await create(client, "browser-1", "optimize", SAMPLE)
    path = f"/v1/runs/{run['run_id']}/stream"
    # as a browser's EventSource does: the client id in the URL, Last-Event-ID on reconnect
    params = {"client_id": "browser-1"}
    first: list[Event] = []
    async with client.stream("GET", path, params=params) as response:
        async for frame in frames(response):
            if "id" in frame:
                first.append(frame["data"])
                if len(first) == 8:
                    break  # the connection drops
    await asyncio.sleep(0.3)  # the run goes on meanwhile

    rest: list[Event] = []
    headers = {"Last-Event-ID": str(first[-1]["seq"])}
    async with client.stream("GET", path, params=params, headers=headers) as response:
        async for frame in frames(response):
            if "id" in frame:
                rest.append(frame["data"])
                if frame["event"] == "end":
                    break

    assert rest[0]["seq"] == 9
    assert_complete_log(first + rest)
    assert first + rest == await all_events(client, "browser-1", run["run_id"])


async def test_a_browser_can_follow_a_run_by_polling_its_snapshot_and_events(client: httpx.AsyncClient) -> None:
    run = await create(client, "poller", "optimize", SAMPLE)
    seen: list[tuple[str, int]] = []
    events: list[Event] = []
    while True:
        current = await snapshot(client, "poller", run["run_id"])
        seen.append((current["status"], current["last_seq"]))
        page = (
            await client.get(f"/v1/runs/{run['run_id']}/events", params={"after": len(events)}, headers=owner("poller"))
        ).json()
        events += page["events"]
        if current["status"] not in ("queued", "running") and len(events) == current["last_seq"]:
            break
        await asyncio.sleep(0.1)

    output = assert_complete_log(events)
    assert current["status"] == "succeeded" and current["output"] == output
    running = [last_seq for status, last_seq in seen if status == "running"]
    assert len(set(running)) >= 5  # the snapshot moved on while the run worked
    assert running == sorted(running)
    fractions = [p["fraction"] for p in of_type(events, "progress")]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


async def test_each_browser_client_id_gets_five_free_runs(llm_url: str) -> None:
    with serve_in_thread(app_for(llm_url, 0.2, quota_runs=5)) as url:  # RUNYARD_QUOTA_RUNS=5
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:

            async def start(who: str, route: str = "/v1/runs") -> httpx.Response:
                body = {"pipeline": "optimize", "input": SAMPLE}
                if route != "/v1/runs/stream":
                    return await client.post(route, json=body, headers=owner(who))
                async with client.stream("POST", route, json=body, headers=owner(who)) as response:
                    await response.aread()
                    return response

            assert [(await start("browser-a")).status_code for _ in range(5)] == [201] * 5
            for route in ("/v1/runs", "/v1/runs/stream", "/v1/runs/wait"):
                sixth = await start("browser-a", route)
                assert sixth.status_code == 429
                assert sixth.json()["error"]["code"] == "quota_exceeded"

            assert [(await start("browser-b")).status_code for _ in range(5)] == [201] * 5  # another browser

            racing = await asyncio.gather(*(start("browser-c") for _ in range(12)))
            assert sorted(response.status_code for response in racing) == [201] * 5 + [429] * 7


async def test_padding_gets_every_event_through_a_4k_buffering_proxy_at_once(llm_url: str, slow_server: str) -> None:
    """Slow runs (a small event every second or so) read for a few seconds through a proxy
    that holds responses until it has 4 KB: unpadded, padded by ``?pad=4096``, and padded
    by the server's ``RUNYARD_SSE_PAD_BYTES=4096``."""
    window_s = 3.0
    with serve_in_thread(app_for(llm_url, SLOW_S, sse_pad_bytes=4096)) as padding_server:
        async with (
            BufferingProxy(*_host_port(slow_server)) as proxy,
            BufferingProxy(*_host_port(padding_server)) as padding_proxy,
        ):
            plain, by_query, by_setting = (
                await _start(slow_server),
                await _start(slow_server),
                await _start(padding_server),
            )
            through_proxy, direct, padded_by_query, padded_by_setting = await asyncio.gather(
                _arrivals(proxy.url, plain, window_s),
                _arrivals(slow_server, plain, window_s),  # the same run, not through the proxy
                _arrivals(proxy.url, by_query, window_s, pad=4096),
                _arrivals(padding_proxy.url, by_setting, window_s),
            )
            plain_events, by_query_events, by_setting_events = [
                await _stop(*run) for run in (plain, by_query, by_setting)
            ]

    def lateness(reading: Reading, events: list[Event]) -> list[float]:
        """How long after it was emitted (or the stream was asked for, if later) each event
        emitted up to a second before the reading stopped arrived; or, if it never did, how
        long it had been waiting by then."""
        return [
            reading.arrivals.get(event["seq"], reading.ended) - max(ts(event), reading.started)
            for event in events
            if ts(event) < reading.ended - 1.0
        ]

    for arrivals, events in ((padded_by_query, by_query_events), (padded_by_setting, by_setting_events)):
        delays = lateness(arrivals, events)
        assert len(delays) >= 5 and max(delays) < 1.0, delays
    assert max(lateness(direct, plain_events)) < 1.0  # the server sends each event at once...
    assert max(lateness(through_proxy, plain_events)) > 1.0  # ...but the proxy holds small ones back


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


async def _start(base_url: str) -> tuple[str, str]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        return base_url, (await create(client, "p", "optimize", SAMPLE))["run_id"]


async def _stop(base_url: str, run_id: str) -> list[Event]:
    """Cancel the run; the events it had emitted."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        events = await all_events(client, "p", run_id)
        await client.post(f"/v1/runs/{run_id}/cancel", headers=owner("p"))
        return events


@dataclass
class Reading:
    started: float  # unix times
    ended: float
    arrivals: dict[int, float]  # seq -> when it arrived


async def _arrivals(base_url: str, run: tuple[str, str], window_s: float, pad: int | None = None) -> Reading:
    """When each event of ``run``'s stream arrived from ``base_url``, read for ``window_s``."""
    params = {"pad": str(pad)} if pad is not None else {}
    reading = Reading(time.time(), 0.0, {})
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(window_s):
                stream = client.stream("GET", f"/v1/runs/{run[1]}/stream", params=params, headers=owner("p"))
                async with stream as response:
                    async for frame in frames(response):
                        if "id" in frame:
                            reading.arrivals[frame["id"]] = time.time()
    reading.ended = time.time()
    return reading


# -- durable stages: kill -9 in stage 3 ------------------------------------------------

APP = "examples.resume_optimizer.app:app"
STAGES = ["parse", "analyze", "rewrite", "tailor", "score"]


@pytest.mark.slow
async def test_a_server_killed_in_stage_3_resumes_there_without_calling_the_llm_for_stages_1_and_2_again(
    tmp_path: Path,
) -> None:
    """One ``runyard serve`` process on a SQLite file, killed with SIGKILL while stage 3
    (rewrite) waits between its LLM calls, then started again on the same file: the
    run is taken over (a retry), replays stages 1 and 2 from their records, starts
    stage 3 over and finishes. The fake LLM counts every call it answered."""
    llm = FakeLLM()
    sections = parse_resume(SAMPLE["resume"])
    bullets = sum(len(section.bullets) for section in sections)
    with serve_asgi(llm.asgi()) as llm_base:
        env = {
            "RUNYARD_STORE": f"sqlite:///{tmp_path}/resume.db",
            "RUNYARD_LEASE_S": "2",  # how soon the restarted process takes the dead one's run over
            "RUNYARD_LOG_LEVEL": "WARNING",
            "RESUME_OPTIMIZER_SECONDS": "6.5",  # 26 steps of 0.25 s: stage 3 lasts 1.75 s
            "RESUME_OPTIMIZER_LLM_URL": f"{llm_base}/v1",
        }
        log = tmp_path / "server.log"
        first = ServerProcess(env, app=APP, output=log).start()
        try:
            async with httpx.AsyncClient(base_url=first.url, timeout=30) as client:
                run_id = (await create(client, "ada", "optimize", SAMPLE))["run_id"]

                async def in_stage_3() -> bool:  # its first rewrite is stored
                    return any(e["type"] == "rewrite" for e in await all_events(client, "ada", run_id))

                await wait_until(in_stage_3, 30)
            first.kill()
        finally:
            first.stop()
        at_kill = dict(llm.tasks)

        second = ServerProcess(env, app=APP, output=log).start()
        try:
            async with httpx.AsyncClient(base_url=second.url, timeout=30) as client:
                final = await wait_finished(client, "ada", run_id, within=60)
                events = await all_events(client, "ada", run_id)
        finally:
            second.stop()

    assert final["status"] == "succeeded", final
    assert final["attempt"] == 2  # the killed execution counts as one attempt
    output = assert_complete_log(events)
    rewrites = sum(1 for critique in of_type(events, "critique") if critique["issues"])  # stage 3's calls
    assert at_kill["keywords"] == 1 and at_kill["critique"] == bullets
    assert 1 <= at_kill["rewrite"] < rewrites and "tailor" not in at_kill, "killed in the middle of stage 3"
    assert dict(llm.tasks) == {
        "keywords": 1,  # stage 1: not called again
        "critique": bullets,  # stage 2: not called again
        "rewrite": at_kill["rewrite"] + rewrites,  # stage 3: cut off, so started over
        "tailor": len(output["keywords"]),
        "summary": 1,
    }

    # Every stage's events once, but for the stage cut off: what it emitted before the
    # kill stays, a `step` `restarted` marker follows, then all of it again.
    phases = [(p["name"], p["status"]) for p in of_type(events, "phase")]
    assert phases == [(stage, status) for stage in STAGES for status in ("started", "done")]
    steps = [(step["name"], step["status"]) for step in of_type(events, "step")]
    assert steps == [
        ("parse", "started"),
        ("parse", "done"),
        ("analyze", "started"),
        ("analyze", "done"),
        ("rewrite", "started"),
        ("rewrite", "restarted"),
        ("rewrite", "started"),
        ("rewrite", "done"),
        ("tailor", "started"),
        ("tailor", "done"),
        ("score", "started"),
        ("score", "done"),
    ]
    types = [event["type"] for event in events]
    assert types.count("keywords") == 1 and types.count("section") == len(sections)
    assert [c["bullet"] for c in of_type(events, "critique")] == [
        bullet for section in sections for bullet in section.bullets
    ]
    restarted = next(n for n, e in enumerate(events) if e["type"] == "step" and e["data"]["status"] == "restarted")
    cut_off, again = of_type(events[:restarted], "rewrite"), of_type(events[restarted:], "rewrite")
    assert 1 <= len(cut_off) < len(again) and cut_off == again[: len(cut_off)]
    assert "".join(token["text"] for token in of_type(events, "token")) == output["summary"]
    statuses = [(s["status"], s.get("reason")) for s in of_type(events, "status")]
    assert statuses == [("running", None), ("queued", "worker_lost"), ("running", None), ("succeeded", None)]
