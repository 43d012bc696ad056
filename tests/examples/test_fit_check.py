"""examples/fit_check: phases and thoughts streamed in order, users isolated from
each other, ``on_disconnect=cancel`` stopping the work, and a 5-minute timeout,
against the simulated LLM and search API on loopback."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest

from examples.fit_check.app import Config, build_app
from examples.fit_check.fake_llm import FakeLLM
from examples.fit_check.fake_search import FakeSearch
from runyard import Settings
from tests.examples._runs import (
    assert_complete_log,
    create,
    of_type,
    owner,
    stream_new_run,
    wait_finished,
)
from tests.sse_reader import frames
from tests.support import serve_asgi, serve_in_thread

pytestmark = pytest.mark.server

SETTINGS = Settings(store="memory://", drain_s=0.2)


def assessment(candidate: str, skills: list[str] | None = None) -> dict[str, object]:
    return {
        "candidate": candidate,
        "skills": skills or ["python", "postgres", "asyncio"],
        "company": "Acme Robotics",
        "role": "backend engineer",
    }


@dataclass
class Services:
    llm: FakeLLM
    search: FakeSearch
    config: Config


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    llm, search = FakeLLM(delay_s=0.02), FakeSearch(delay_s=0.03)
    with serve_asgi(llm.asgi()) as llm_url, serve_asgi(search.asgi()) as search_url:
        yield Services(llm, search, Config(llm_url=f"{llm_url}/v1", search_url=search_url))


@pytest.fixture(scope="module")
def server(services: Services) -> Iterator[str]:
    with serve_in_thread(build_app(services.config, SETTINGS)) as url:
        yield url


@pytest.fixture
async def client(server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        yield http


async def test_an_assessment_streams_research_match_and_verdict_with_thoughts_in_order(
    client: httpx.AsyncClient,
) -> None:
    events = await stream_new_run(client, "ada", "fit_check", assessment("Ada", ["python", "postgres"]))
    output = assert_complete_log(events)

    phases = [(p["name"], p["status"]) for p in of_type(events, "phase")]
    assert phases == [
        ("research", "started"),
        ("research", "done"),
        ("match", "started"),
        ("match", "done"),
        ("verdict", "started"),
        ("verdict", "done"),
    ]
    # every thought arrives inside the phase it belongs to, as the work happens
    current = None
    for event in events:
        if event["type"] == "phase":
            current = event["data"]["name"] if event["data"]["status"] == "started" else None
        elif event["type"] == "thought":
            assert event["data"]["phase"] == current, event
        elif event["type"] in ("source", "match", "token"):
            assert current == {"source": "research", "match": "match", "token": "verdict"}[event["type"]]
    thoughts = of_type(events, "thought")
    assert len(thoughts) == 2 + len(output["matches"])  # plan, requirements, one per requirement

    assert [m["requirement"] for m in of_type(events, "match")] == [m["requirement"] for m in output["matches"]]
    assert "".join(t["text"] for t in of_type(events, "token")) == output["summary"]
    assert output["verdict"] in ("strong fit", "possible fit", "weak fit")
    assert output["summary"].startswith(f"Ada is a {output['verdict']}")
    assert of_type(events, "progress")[-1]["fraction"] == 1.0


async def test_deep_research_sends_live_updates_well_before_its_report(
    client: httpx.AsyncClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services.llm, "delay_s", 0.25)  # each round and the report take a while
    arrivals: list[tuple[float, dict[str, object]]] = []
    body = {"pipeline": "deep_research", "input": {"topic": "tidal power", "rounds": 3}}
    async with client.stream("POST", "/v1/runs/stream", json=body, headers=owner("grace")) as response:
        async for frame in frames(response):
            if "id" in frame:
                arrivals.append((time.monotonic(), frame["data"]))
                if frame["event"] == "end":
                    break
    events = [event for _, event in arrivals]
    output = assert_complete_log(events)

    updates = of_type(events, "update")
    assert [u["sources"] for u in updates] == list(range(1, len(output["sources"]) + 1))
    assert {u["round"] for u in updates} == {1, 2, 3}
    first_update = next(at for at, event in arrivals if event["type"] == "update")
    end = arrivals[-1][0]
    assert end - first_update > 0.5, "updates arrived only with the end: they were not live"
    assert [p["current"] for p in of_type(events, "progress")] == [1, 2, 3]


async def test_two_users_at_once_never_see_each_others_events(client: httpx.AsyncClient, services: Services) -> None:
    users = {
        "alice": ("fit_check", assessment("Alice-7f3a")),
        "bob": ("fit_check", assessment("Bob-91c2", ["rust", "kafka"])),
        "carol": ("deep_research", {"topic": "Carol-5d0e geothermal"}),
        "dave": ("deep_research", {"topic": "Dave-c41b volcanoes"}),
    }
    markers = {"alice": "Alice-7f3a", "bob": "Bob-91c2", "carol": "Carol-5d0e", "dave": "Dave-c41b"}
    streams = await asyncio.gather(*(stream_new_run(client, who, *job) for who, job in users.items()))

    for who, events in zip(users, streams, strict=True):
        assert_complete_log(events)
        text = json.dumps([event["data"] for event in events])
        assert markers[who] in text
        for other, marker in markers.items():
            if other != who:
                assert marker not in text, f"{who}'s stream carries {other}'s events"
        # and every LLM call made on this user's behalf was about this user only
        asked = [json.dumps(call.fields) for call in services.llm.calls_for(who)]
        assert asked and any(markers[who] in fields for fields in asked)
        assert not any(marker in fields for fields in asked for other, marker in markers.items() if other != who)

    alices = (await client.get("/v1/runs", headers=owner("alice"))).json()["runs"]
    assert len(alices) == 1
    run_id = alices[0]["run_id"]
    assert (await client.get(f"/v1/runs/{run_id}", headers=owner("bob"))).status_code == 404
    assert (await client.get(f"/v1/runs/{run_id}/events", headers=owner("bob"))).status_code == 404


async def test_the_search_providers_cap_holds_across_all_users(
    client: httpx.AsyncClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services.search, "max_in_flight", 0)
    jobs = [stream_new_run(client, f"crowd-{n}", "deep_research", {"topic": f"topic {n}"}) for n in range(6)]
    for events in await asyncio.gather(*jobs):
        assert_complete_log(events)
    assert services.search.max_in_flight == 4  # reached, never passed: app.limit("search-api", concurrency=4)
    assert services.search.refused == 0  # so no call ever had to be retried


async def test_a_stream_with_on_disconnect_cancel_stops_the_run_and_its_llm_calls(
    client: httpx.AsyncClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services.llm, "delay_s", 0.2)
    body = {"pipeline": "fit_check", "input": assessment("Quitter"), "on_disconnect": "cancel"}
    async with client.stream("POST", "/v1/runs/stream", json=body, headers=owner("quitter")) as response:
        run_id = response.headers["Location"].rsplit("/", 1)[-1]
        async for frame in frames(response):
            if frame.get("event") == "thought":
                break  # the user closes the tab mid-research
    final = await wait_finished(client, "quitter", run_id, within=5)
    assert final["status"] == "cancelled"

    calls = len(services.llm.calls_for("quitter"))
    await asyncio.sleep(1.0)  # long enough for several more calls, had the run gone on
    assert len(services.llm.calls_for("quitter")) == calls
    assert calls < 7  # an assessment makes 7 calls; this one stopped after its first few


async def test_a_stream_that_may_continue_finishes_without_its_client(
    client: httpx.AsyncClient, services: Services
) -> None:
    body = {"pipeline": "fit_check", "input": assessment("Stayer")}  # on_disconnect defaults to "continue"
    async with client.stream("POST", "/v1/runs/stream", json=body, headers=owner("stayer")) as response:
        run_id = response.headers["Location"].rsplit("/", 1)[-1]
        async for frame in frames(response):
            if frame.get("event") == "thought":
                break
    final = await wait_finished(client, "stayer", run_id, within=10)
    assert final["status"] == "succeeded"
    assert len(services.llm.calls_for("stayer")) == 7


def test_both_pipelines_time_out_after_five_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIT_CHECK_TIMEOUT_S", raising=False)
    app = build_app(settings=SETTINGS)
    assert app.pipelines["fit_check"].timeout_s == 300
    assert app.pipelines["deep_research"].timeout_s == 300


async def test_a_run_past_its_timeout_ends_timed_out_and_stops_calling_the_llm(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services.llm, "delay_s", 0.2)
    monkeypatch.setenv("FIT_CHECK_TIMEOUT_S", "0.5")  # the same timeout, shortened
    config = Config.from_env()
    short = Config(llm_url=services.config.llm_url, search_url=services.config.search_url, timeout_s=config.timeout_s)
    with serve_in_thread(build_app(short, SETTINGS)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            run = await create(client, "slowpoke", "fit_check", assessment("Slowpoke"))
            final = await wait_finished(client, "slowpoke", run["run_id"], within=5)
            assert final["status"] == "timed_out"
            assert final["error"]["code"] == "timed_out"
            calls = len(services.llm.calls_for("slowpoke"))
            await asyncio.sleep(0.8)
            assert len(services.llm.calls_for("slowpoke")) == calls < 7
