"""The bundled ``approval`` pipeline, served on ``memory://``: it drafts in a
recorded step, waits for a person without a worker, waits on a durable timer,
and leaves every event once although it executes three times."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest

from runyard import RunStatus, Runyard, Settings
from runyard.demo import app as demo_app
from runyard.demo import approval as approval_module
from runyard.demo import register_demo_pipelines
from runyard.demo.approval import QUESTION, Review, decide, write_draft
from runyard.errors import InvalidAnswer, InvalidRequest
from runyard.models import Run
from runyard.runtime import Runtime
from tests.governance.support import wait_until
from tests.support import serve_in_thread

TOPIC = "the spring release"
OWNER = "alice"


def demo(store: str = "memory://") -> Runyard:
    return register_demo_pipelines(Runyard(Settings(store=store)))


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNYARD_DEMO_SPEED", "0")  # no typing pauses; a 0 s publish timer does not wait


@pytest.fixture
def drafts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The topics the writer was called for, in this process."""
    called: list[str] = []
    real = approval_module.write_draft

    def counted(topic: str) -> str:
        called.append(topic)
        return real(topic)

    monkeypatch.setattr(approval_module, "write_draft", counted)
    return called


@pytest.fixture
async def rt() -> AsyncIterator[Runtime]:
    async with demo().running() as runtime:
        yield runtime


async def reached(rt: Runtime, run_id: str, status: RunStatus) -> Run:
    async def there() -> bool:
        return (await rt.get_run(OWNER, run_id)).status is status

    await wait_until(there, 10)
    return await rt.get_run(OWNER, run_id)


async def events_of(rt: Runtime, run_id: str) -> list[tuple[str, Any]]:
    return [(e.type, orjson.loads(e.data)) for e in await rt.store.read_events(run_id, 0, 10_000)]


async def test_it_drafts_asks_a_person_then_publishes_the_approved_draft_with_every_event_once(
    rt: Runtime, drafts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNYARD_DEMO_SPEED", "0.1")  # a 0.2 s timer: a real wait, not a skipped one
    run = await rt.create_run(OWNER, "approval", {"topic": TOPIC})
    waiting = await reached(rt, run.run_id, RunStatus.WAITING)
    draft = write_draft(TOPIC)

    assert waiting.snapshot()["waiting_for"]["request"] == {"draft": draft, "question": QUESTION}
    schema = waiting.snapshot()["waiting_for"]["schema"]
    assert schema["properties"]["approve"]["type"] == "boolean" and schema["required"] == ["approve"]
    await wait_until(lambda: rt.engine.active == 0, 5)  # the execution unwinds just after the run is stored waiting
    assert (await rt.get_run(OWNER, run.run_id)).status is RunStatus.WAITING, "it waits without a worker"
    assert waiting.waiting is not None

    await rt.answer(OWNER, run.run_id, {"approve": True}, waiting.waiting.id)
    done = await rt.wait(await rt.get_run(OWNER, run.run_id), 10)

    assert done is not None and done.status is RunStatus.SUCCEEDED
    assert done.output == {"topic": TOPIC, "draft": draft, "decision": "approved", "text": draft}
    assert drafts == [TOPIC], "three executions, one draft written"
    events = await events_of(rt, run.run_id)
    tokens = [data["text"] for kind, data in events if kind == "token"]
    assert "".join(tokens) == draft and len(tokens) == len(draft.split())
    story = [(kind, data) for kind, data in events if kind not in ("token", "status", "end")]
    assert story == [
        ("phase", {"name": "draft", "status": "started"}),
        ("step", {"name": "draft", "n": 1, "status": "started"}),
        ("step", {"name": "draft", "n": 1, "status": "done"}),
        ("phase", {"name": "draft", "status": "done", "words": len(draft.split())}),
        ("input.requested", {"ask_id": waiting.waiting.id, "request": waiting.waiting.request, "schema": schema}),
        ("input.received", {"ask_id": waiting.waiting.id}),
        ("decision", {"decision": "approved", "text": draft}),
        ("phase", {"name": "publish", "status": "started"}),
        ("phase", {"name": "publish", "status": "done"}),
    ]
    statuses = [data["status"] for kind, data in events if kind == "status"]
    assert statuses == ["running", "waiting", "queued", "running", "waiting", "queued", "running", "succeeded"]


async def test_the_publish_delay_is_a_durable_timer_that_holds_no_worker(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNYARD_DEMO_SPEED", "0.5")  # a 1 s timer, long enough to look at
    monkeypatch.setattr(approval_module, "pause", _no_pause)
    run = await rt.create_run(OWNER, "approval", {"topic": TOPIC})
    asked = await reached(rt, run.run_id, RunStatus.WAITING)
    assert asked.waiting is not None
    await rt.answer(OWNER, run.run_id, {"approve": False, "edited": "Ship it on Friday."}, asked.waiting.id)

    async def sleeping() -> bool:
        current = await rt.get_run(OWNER, run.run_id)
        return current.status is RunStatus.WAITING and "until" in (current.snapshot()["waiting_for"] or {})

    await wait_until(sleeping, 10)
    await wait_until(lambda: rt.engine.active == 0, 5)
    assert await sleeping(), "it sleeps without a worker"
    done = await rt.wait(await rt.get_run(OWNER, run.run_id), 10)
    assert done is not None and done.status is RunStatus.SUCCEEDED
    assert done.output is not None and done.output["text"] == "Ship it on Friday."


async def _no_pause(seconds: float) -> None:
    return None


def test_the_answer_decides_the_text_that_goes_out() -> None:
    draft = write_draft(TOPIC)
    assert decide(draft, Review(approve=True)) == ("approved", draft)
    assert decide(draft, Review(approve=False, edited="  Mine.  ")) == ("edited", "Mine.")
    assert decide(draft, Review(approve=True, edited="Mine, approved.")) == ("edited", "Mine, approved.")
    assert decide(draft, Review(approve=False)) == ("rejected", None)


async def test_a_bad_answer_is_refused_and_the_run_keeps_waiting(rt: Runtime) -> None:
    run = await rt.create_run(OWNER, "approval", {})
    asked = await reached(rt, run.run_id, RunStatus.WAITING)
    for bad in ({"approve": "maybe"}, {"edited": "no approve field"}, {"approve": True, "edited": ""}, "yes"):
        with pytest.raises(InvalidAnswer):
            await rt.answer(OWNER, run.run_id, bad)
    after = await rt.get_run(OWNER, run.run_id)
    assert after.status is RunStatus.WAITING and after.last_seq == asked.last_seq


def test_the_draft_is_deterministic_and_about_its_topic() -> None:
    assert write_draft("tides") == write_draft("tides")
    assert "tides" in write_draft("tides")
    assert len({write_draft(f"topic {n}") for n in range(20)}) > 3


def test_the_input_has_a_default_topic_so_the_dashboard_form_can_start_it() -> None:
    spec = demo_app.pipelines["approval"]
    assert spec.validate_input({}) == {"topic": "the team offsite"}
    assert spec.input_schema()["properties"]["topic"]["default"] == "the team offsite"
    assert spec.description
    for bad in ({"topic": ""}, {"topic": "x" * 201}, {"topic": 3}, {"subject": "x"}):
        with pytest.raises(InvalidRequest):
            spec.validate_input(bad)


# -- through the HTTP API, as the dashboard or curl answers ---------------------------


@pytest.fixture
def server() -> Iterator[str]:
    with serve_in_thread(demo()) as url:
        yield url


async def test_a_person_answers_over_http_with_their_own_text(server: str) -> None:
    headers = {"X-Client-Id": OWNER}
    async with httpx.AsyncClient(base_url=server, headers=headers, timeout=10) as http:
        created = (await http.post("/v1/runs", json={"pipeline": "approval", "input": {"topic": TOPIC}})).json()
        path = f"/v1/runs/{created['run_id']}"

        async def waiting() -> bool:
            return bool((await http.get(path)).json()["status"] == "waiting")

        await wait_until(waiting, 10)
        asked = (await http.get(path)).json()["waiting_for"]
        stale = await http.post(f"{path}/input", json={"value": {"approve": True}, "ask_id": "ask_not_this_one"})
        assert stale.status_code == 409 and stale.json()["error"]["code"] == "ask_mismatch"
        bad = await http.post(f"{path}/input", json={"value": {"approve": "sure"}, "ask_id": asked["ask_id"]})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_input"

        edited = {"approve": False, "edited": "The spring release ships on 3 May."}
        answered = await http.post(f"{path}/input", json={"value": edited, "ask_id": asked["ask_id"]})
        assert answered.status_code == 202 and answered.json()["status"] == "queued"

        await wait_until(lambda: _finished(http, path), 10)
        final = (await http.get(path)).json()
    assert final["status"] == "succeeded"
    assert final["output"]["decision"] == "edited"
    assert final["output"]["text"] == "The spring release ships on 3 May."


async def _finished(http: httpx.AsyncClient, path: str) -> bool:
    return bool((await http.get(path)).json()["status"] == "succeeded")
