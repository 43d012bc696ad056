"""The LangGraph API at /langgraph, spoken to by the real ``langgraph_sdk`` over a
real server: assistants are pipelines, threads sessions, runs runs; every
stream mode; a dropped stream rejoined by ``last_event_id``; an interrupt
(``ctx.ask``) answered with ``Command(resume=...)``; crons and the store."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import AuthenticationError, ConflictError, NotFoundError, UnprocessableEntityError
from langgraph_sdk.schema import Command, StreamPart

from tests.dashboard.proxy import CuttableProxy
from tests.langgraph_api.app import SECRET, build, token
from tests.support import REPO, make_app, serve_in_thread

pytestmark = pytest.mark.server
ALL_MODES = ["values", "updates", "messages-tuple", "messages", "custom", "events", "debug"]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve_in_thread(build(wait_max_s=2)) as url:
        yield url


def client_of(server: str, who: str | None = None) -> LangGraphClient:
    """The SDK as a user configures it, as its own client id (a fresh one by default)."""
    return get_client(url=f"{server}/langgraph", headers={"X-Client-Id": who or f"c-{uuid.uuid4().hex[:12]}"})


@pytest.fixture
async def client(server: str) -> AsyncIterator[LangGraphClient]:
    sdk = client_of(server)
    yield sdk
    await sdk.aclose()


async def collect(parts: AsyncIterator[StreamPart]) -> list[StreamPart]:
    return [part async for part in parts]


async def v1_run(server: str, client: LangGraphClient, run_id: str) -> dict[str, Any]:
    """The run as ``/v1`` shows it, to the same owner."""
    async with httpx.AsyncClient(headers={"X-Client-Id": client.http.client.headers["X-Client-Id"]}) as http:
        snapshot: dict[str, Any] = (await http.get(f"{server}/v1/runs/{run_id}")).json()
        return snapshot


def of(parts: list[StreamPart], event: str) -> list[Any]:
    return [part.data for part in parts if part.event == event]


# -- assistants ----------------------------------------------------------------------


async def test_assistants_are_the_pipelines(client: LangGraphClient) -> None:
    found = await client.assistants.search()
    assert [a["assistant_id"] for a in found] == ["parrot", "approval", "ticker", "boom", "review", "writer"]
    assert all(a["graph_id"] == a["assistant_id"] for a in found)
    parrot = await client.assistants.get("parrot")
    assert parrot["description"] == "Says the message back, a word at a time."
    schemas = await client.assistants.get_schemas("parrot")
    assert schemas["input_schema"]["properties"]["message"]["type"] == "string"
    assert [a["name"] for a in await client.assistants.search(graph_id="ticker")] == ["ticker"]
    with pytest.raises(NotFoundError):
        await client.assistants.get("nope")


# -- threads -------------------------------------------------------------------------


async def test_threads_are_sessions_created_with_or_without_an_id(client: LangGraphClient) -> None:
    made = await client.threads.create(metadata={"topic": "cats"})
    assert made["status"] == "idle" and made["metadata"] == {"topic": "cats"}
    mine = f"thread-{uuid.uuid4().hex[:8]}"
    chosen = await client.threads.create(thread_id=mine)
    assert chosen["thread_id"] == mine
    with pytest.raises(ConflictError):
        await client.threads.create(thread_id=mine)
    again = await client.threads.create(thread_id=mine, if_exists="do_nothing")
    assert again["thread_id"] == mine
    assert (await client.threads.get(mine))["thread_id"] == mine
    found = await client.threads.search(metadata={"topic": "cats"})
    assert [t["thread_id"] for t in found] == [made["thread_id"]]
    await client.threads.delete(mine)
    with pytest.raises(NotFoundError):
        await client.threads.get(mine)


# -- runs ----------------------------------------------------------------------------


async def test_a_run_created_then_joined_gives_its_output_as_values(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    run = await client.runs.create(thread["thread_id"], "parrot", input={"message": "hello you"}, metadata={"k": 1})
    assert run["thread_id"] == thread["thread_id"] and run["assistant_id"] == "parrot"
    assert await client.runs.join(thread["thread_id"], run["run_id"]) == {"reply": "hello you"}
    got = await client.runs.get(thread["thread_id"], run["run_id"])
    assert got["status"] == "success" and got["metadata"] == {"k": 1}
    assert [r["run_id"] for r in await client.runs.list(thread["thread_id"])] == [run["run_id"]]
    assert (await client.threads.get(thread["thread_id"]))["values"] == {"reply": "hello you"}


async def test_wait_in_a_thread_and_stateless(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    assert await client.runs.wait(thread["thread_id"], "parrot", input={"message": "one"}) == {"reply": "one"}
    assert await client.runs.wait(None, "parrot", input={"message": "two"}) == {"reply": "two"}
    parts = await collect(client.runs.stream(None, "parrot", input={"message": "three"}))
    assert of(parts, "values") == [{"reply": "three"}]


async def test_every_stream_mode_with_metadata_first_and_end_last(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    parts = await collect(
        client.runs.stream(thread["thread_id"], "parrot", input={"message": "hi there"}, stream_mode=ALL_MODES)
    )
    assert parts[0].event == "metadata" and parts[-1].event == "end"
    run_id = parts[0].data["run_id"]
    assert of(parts, "values") == [{"reply": "hi there"}]
    assert {"speak": {"status": "started"}} in of(parts, "updates")
    tokens = [chunk["content"] for chunk, meta in of(parts, "messages")]
    assert tokens == ["hi ", "there "]
    assert of(parts, "messages/partial")[-1][0]["content"] == "hi there "
    assert len(of(parts, "messages/metadata")) == 1
    assert of(parts, "custom") == [{"type": "note", "words": 2}]
    assert {e["event"] for e in of(parts, "events")} == {"on_custom_event", "on_chat_model_stream"}
    assert all(e["run_id"] == run_id for e in of(parts, "events"))
    assert [d["type"] for d in of(parts, "debug")][:2] == ["status", "phase"]
    ids = [part.id for part in parts]
    assert len(ids) == len(set(ids))  # every part has an id of its own


async def test_only_the_modes_asked_for_are_sent(client: LangGraphClient) -> None:
    parts = await collect(client.runs.stream(None, "parrot", input={"message": "a b"}, stream_mode="updates"))
    assert {part.event for part in parts} == {"metadata", "updates", "end"}


async def test_a_wait_longer_than_runyard_wait_max_s_answers_202_and_the_run_goes_on(server: str) -> None:
    async with httpx.AsyncClient(base_url=f"{server}/langgraph", headers={"X-Client-Id": "slow-waiter"}) as http:
        body = {"assistant_id": "ticker", "input": {"count": 500, "interval_ms": 20}}
        waited = await http.post("/runs/wait", json=body, timeout=30)
        assert waited.status_code == 202  # after RUNYARD_WAIT_MAX_S (2 s here)
        run_path = waited.headers["Content-Location"]
        assert waited.headers["Location"] == f"{run_path}/join"
        assert (await http.get(run_path)).json()["status"] == "running"
        assert (await http.post(f"{run_path}/cancel")).status_code == 202


async def test_a_failed_run_ends_its_stream_with_error(client: LangGraphClient) -> None:
    parts = await collect(client.runs.stream(None, "boom", input={"message": "x"}, stream_mode=["messages-tuple"]))
    assert [part.event for part in parts] == ["metadata", "messages", "error"]
    assert parts[-1].data["error"] == "pipeline_error"
    assert "on fire" in parts[-1].data["message"]
    with pytest.raises(Exception, match="pipeline_error"):
        await client.runs.wait(None, "boom", input={"message": "x"})


async def test_a_dropped_stream_rejoined_with_last_event_id_has_no_gap_and_no_repeat(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    stream = client.runs.stream(
        thread["thread_id"],
        "ticker",
        input={"count": 30, "interval_ms": 5},
        stream_mode=["custom", "debug"],
        stream_resumable=True,
    )
    first: list[StreamPart] = []
    async for part in stream:
        first.append(part)
        if len(first) == 12:
            break  # the client goes away mid-run (the run goes on)
    await stream.aclose()  # type: ignore[attr-defined]
    run_id = first[0].data["run_id"]
    rest = await collect(
        client.runs.join_stream(
            thread["thread_id"], run_id, stream_mode=["custom", "debug"], last_event_id=first[-1].id
        )
    )
    whole = await collect(client.runs.join_stream(thread["thread_id"], run_id, stream_mode=["custom", "debug"]))
    assert [p.id for p in first + rest] == [p.id for p in whole]
    assert [p.data for p in first + rest] == [p.data for p in whole]
    assert [t["i"] for t in of(first + rest, "custom")] == list(range(30))


async def test_a_graphs_custom_events_rejoined_in_custom_mode_come_each_once_as_written(
    client: LangGraphClient,
) -> None:
    """A graph's ``get_stream_writer()`` data is relayed as stored, without a
    decode: a rejoin from inside the run still misses and repeats nothing."""
    thread = await client.threads.create()
    stream = client.runs.stream(
        thread["thread_id"], "writer", input={"count": 40, "messages": []}, stream_mode="custom"
    )
    first: list[StreamPart] = []
    async for part in stream:
        first.append(part)
        if len(first) == 15:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    run_id = first[0].data["run_id"]
    rest = await collect(
        client.runs.join_stream(thread["thread_id"], run_id, stream_mode="custom", last_event_id=first[-1].id)
    )
    written = of(first + rest, "custom")
    assert written == [{"type": "tick", "i": i, "text": f'",ts":"{i}'} for i in range(40)]


async def test_a_stream_cut_by_the_network_is_resumed_by_the_sdk_itself(server: str) -> None:
    """The SDK reconnects to the stream's ``Location`` with the last id it saw."""
    host, port = server.removeprefix("http://").split(":")
    relay = CuttableProxy(host, int(port))
    try:
        async with client_of(relay.url) as sdk:
            ticks: list[int] = []
            async for part in sdk.runs.stream(
                None, "ticker", input={"count": 40, "interval_ms": 20}, stream_mode="custom"
            ):
                if part.event == "custom":
                    ticks.append(part.data["i"])
                    if len(ticks) == 10:
                        assert relay.cut() > 0  # the connection is reset mid-response
    finally:
        relay.close()
    assert ticks == list(range(40))


async def test_an_interrupt_is_answered_with_command_resume(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    parts = await collect(
        client.runs.stream(tid, "approval", input={"message": "ship it"}, stream_mode=["values", "updates"])
    )
    assert parts[-1].event == "end"
    [asked] = of(parts, "updates")[-1]["__interrupt__"]
    assert asked["value"] == {"question": "approve ship it?"}
    assert of(parts, "values")[-1]["__interrupt__"] == [asked]
    state = await client.threads.get_state(tid)
    assert state["interrupts"] == [asked] and state["next"] == ["approval"]
    assert (await client.threads.get(tid))["status"] == "interrupted"
    run = (await client.runs.list(tid))[0]
    assert run["status"] == "interrupted"
    resumed = await collect(client.runs.stream(tid, "approval", command=Command(resume="yes"), stream_mode="values"))
    assert resumed[0].data["run_id"] == run["run_id"]  # the same run goes on
    assert of(resumed, "values") == [{"message": "ship it", "approved": "yes"}]
    assert (await client.threads.get_state(tid))["interrupts"] == []
    with pytest.raises(ConflictError, match="waits for an answer"):  # nothing does any more
        await client.runs.create(tid, "approval", command={"resume": "again"})


async def test_wait_answers_an_interrupt_with_its_values(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    waited = await client.runs.wait(thread["thread_id"], "approval", input={"message": "m"})
    [asked] = waited["__interrupt__"]
    resumed = await client.runs.wait(thread["thread_id"], "approval", command={"resume": {asked["id"]: "ok"}})
    assert resumed == {"message": "m", "approved": "ok"}


async def test_a_langgraph_graph_streams_its_state_updates_and_messages(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    said = {"messages": [{"role": "user", "content": "cats"}]}
    parts = await collect(
        client.runs.stream(tid, "review", input=said, stream_mode=["values", "updates", "messages-tuple"])
    )
    values = of(parts, "values")
    assert [m["content"] for m in values[0]["messages"]] == ["cats"]  # the input state first
    assert [m["content"] for m in values[1]["messages"]] == ["cats", "a draft about cats"]
    assert "draft" in {node for update in of(parts, "updates") for node in update}
    [(message, meta)] = of(parts, "messages")
    assert (message["id"], message["content"], meta["langgraph_node"]) == ("draft-1", "a draft about cats", "draft")
    [asked] = values[-1]["__interrupt__"]
    assert asked["value"] == {"question": "publish?"}
    assert (await client.threads.get_state(tid))["values"]["messages"][-1]["id"] == "draft-1"
    resumed = await collect(client.runs.stream(tid, "review", command=Command(resume="yes")))
    assert of(resumed, "values")[-1]["approved"] == "yes"
    assert (await client.threads.get(tid))["values"]["approved"] == "yes"


async def test_the_thread_stream_follows_every_run_and_resumes(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    await client.runs.wait(tid, "parrot", input={"message": "one"})
    await client.runs.wait(tid, "parrot", input={"message": "two"})
    seen: list[StreamPart] = []
    async for part in await client.threads.join_stream(tid):
        seen.append(part)
        if len(of(seen, "end")) == 2:
            break
    assert [v["reply"] for v in of(seen, "values")] == ["one", "two"]
    assert len(of(seen, "metadata")) == 2
    middle = next(i for i, part in enumerate(seen) if part.event == "end")
    later: list[StreamPart] = []
    async for part in await client.threads.join_stream(tid, last_event_id=seen[middle].id):
        later.append(part)
        if part.event == "end":
            break
    assert [p.id for p in later] == [p.id for p in seen[middle + 1 :]]


# -- multitask, cancel, disconnect, scheduling ------------------------------------------


async def test_multitask_strategies(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    first = await client.runs.create(tid, "approval", input={"message": "a"})
    await client.runs.join(tid, first["run_id"])  # now it waits for an answer, holding the thread
    with pytest.raises(ConflictError):
        await client.runs.create(tid, "parrot", input={"message": "b"}, multitask_strategy="reject")
    queued = await client.runs.create(tid, "parrot", input={"message": "c"}, multitask_strategy="enqueue")
    assert queued["status"] == "pending"
    await client.runs.create(tid, "parrot", input={"message": "d"}, multitask_strategy="interrupt")
    assert (await client.runs.get(tid, first["run_id"]))["status"] == "interrupted"  # cancelled
    with pytest.raises(UnprocessableEntityError):
        await client.runs.create(tid, "parrot", input={"message": "e"}, multitask_strategy="rollback")


async def test_cancel_and_on_disconnect_cancel(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    run = await client.runs.create(tid, "ticker", input={"count": 1000, "interval_ms": 20})
    await client.runs.cancel(tid, run["run_id"])
    assert (await client.runs.join(tid, run["run_id"]))["__error__"]["error"] == "cancelled"
    stream = client.runs.stream(
        tid, "ticker", input={"count": 1000, "interval_ms": 20}, stream_mode="custom", on_disconnect="cancel"
    )
    async for part in stream:
        if part.event == "custom":
            break
    await stream.aclose()  # type: ignore[attr-defined]
    run_id = (await client.runs.list(tid))[0]["run_id"]
    for _ in range(100):
        if (await client.runs.get(tid, run_id))["status"] == "interrupted":
            break
        await asyncio.sleep(0.05)
    assert (await client.runs.get(tid, run_id))["status"] == "interrupted"


async def test_after_seconds_schedules_and_a_webhook_is_checked(server: str, client: LangGraphClient) -> None:
    thread = await client.threads.create()
    run = await client.runs.create(thread["thread_id"], "parrot", input={"message": "later"}, after_seconds=3600)
    assert run["status"] == "pending"
    snapshot = await v1_run(server, client, run["run_id"])
    assert snapshot["scheduled_for"] is not None
    with pytest.raises(UnprocessableEntityError, match="webhook"):
        await client.runs.create(thread["thread_id"], "parrot", input={"message": "x"}, webhook="http://127.0.0.1/x")


async def test_the_callers_traceparent_is_continued(server: str, client: LangGraphClient) -> None:
    trace_id = uuid.uuid4().hex
    traceparent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    run = await client.runs.create(None, "parrot", input={"message": "t"}, headers={"traceparent": traceparent})
    assert (await v1_run(server, client, run["run_id"]))["trace_id"] == trace_id


async def test_bad_input_is_a_clear_4xx(client: LangGraphClient) -> None:
    with pytest.raises(NotFoundError):
        await client.runs.create(None, "nope", input={})
    with pytest.raises(UnprocessableEntityError, match="message"):
        await client.runs.create(None, "parrot", input={"wrong": 1})
    thread = await client.threads.create()
    with pytest.raises(UnprocessableEntityError, match="latest state"):
        await client.runs.create(thread["thread_id"], "parrot", input={"message": "x"}, checkpoint_id="elsewhere")
    first = await client.runs.wait(thread["thread_id"], "parrot", input={"message": "x"})
    latest = (await client.threads.get_state(thread["thread_id"]))["checkpoint"]
    again = await client.runs.wait(thread["thread_id"], "parrot", input={"message": "y"}, checkpoint=latest)
    assert (first, again) == ({"reply": "x"}, {"reply": "y"})  # from the latest state, as useStream asks
    with pytest.raises(UnprocessableEntityError, match="interrupt_before"):
        await client.runs.create(None, "parrot", input={"message": "x"}, interrupt_before=["a"])
    with pytest.raises(NotFoundError):
        await client.runs.create("no-such-thread", "parrot", input={"message": "x"})
    new_thread = "new-thread-" + uuid.uuid4().hex[:6]
    made = await client.runs.create(new_thread, "parrot", input={"message": "x"}, if_not_exists="create")
    assert made["thread_id"] == new_thread


# -- crons and the store -----------------------------------------------------------------


async def test_crons_are_runyard_crons(client: LangGraphClient) -> None:
    cron = await client.crons.create("parrot", schedule="0 9 * * 1", input={"message": "monday"})
    assert cron["assistant_id"] == "parrot" and cron["next_run_date"] is not None
    thread = await client.threads.create()
    on_thread = await client.crons.create_for_thread(
        thread["thread_id"], "parrot", schedule="0 9 * * *", input={"message": "x"}
    )
    assert on_thread["thread_id"] == thread["thread_id"]
    assert {c["cron_id"] for c in await client.crons.search()} == {cron["cron_id"], on_thread["cron_id"]}
    changed = await client.crons.update(cron["cron_id"], schedule="0 10 * * 1", enabled=False)
    assert changed["schedule"] == "0 10 * * 1" and changed["enabled"] is False
    await client.crons.delete(cron["cron_id"])
    assert [c["cron_id"] for c in await client.crons.search()] == [on_thread["cron_id"]]
    with pytest.raises(UnprocessableEntityError):
        await client.crons.create("parrot", schedule="not a schedule", input={"message": "x"})


async def test_the_store_is_the_owners_long_term_store(client: LangGraphClient) -> None:
    await client.store.put_item(["prefs", "u1"], "theme", {"color": "green"})
    item = await client.store.get_item(["prefs", "u1"], "theme")
    assert item["value"] == {"color": "green"} and item["namespace"] == ["prefs", "u1"]
    found = await client.store.search_items(["prefs"], filter={"color": "green"})
    assert [i["key"] for i in found["items"]] == ["theme"]
    assert (await client.store.list_namespaces(prefix=["prefs"]))["namespaces"] == [["prefs", "u1"]]
    await client.store.delete_item(["prefs", "u1"], "theme")
    with pytest.raises(NotFoundError):
        await client.store.get_item(["prefs", "u1"], "theme")


# -- owners ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jwt_server() -> Iterator[str]:
    with serve_in_thread(build(auth="jwt", jwt_secret=SECRET)) as url:
        yield url


def as_subject(server: str, sub: str) -> LangGraphClient:
    return get_client(url=f"{server}/langgraph", headers={"Authorization": f"Bearer {token(sub)}"})


async def test_owners_see_only_their_own_threads_runs_and_items(jwt_server: str) -> None:
    alice, bob = as_subject(jwt_server, "alice"), as_subject(jwt_server, "bob")
    nobody = get_client(url=f"{jwt_server}/langgraph", api_key=None)
    try:
        await _isolated(alice, bob, nobody)
    finally:
        for sdk in (alice, bob, nobody):
            await sdk.aclose()


async def _isolated(alice: LangGraphClient, bob: LangGraphClient, nobody: LangGraphClient) -> None:
    thread = await alice.threads.create(thread_id="shared-name")
    run = await alice.runs.create("shared-name", "parrot", input={"message": "mine"})
    await alice.runs.join("shared-name", run["run_id"])
    await alice.store.put_item(["notes"], "k", {"secret": True})
    with pytest.raises(NotFoundError):
        await bob.runs.get(thread["thread_id"], run["run_id"])
    with pytest.raises(NotFoundError):
        await bob.threads.get_state("shared-name")
    with pytest.raises(NotFoundError):
        await collect(bob.runs.join_stream("shared-name", run["run_id"]))
    with pytest.raises(NotFoundError):
        await bob.store.get_item(["notes"], "k")
    assert await bob.threads.search() == []
    # bob's own thread of the same name is his, apart from alice's
    await bob.threads.create(thread_id="shared-name")
    assert await bob.runs.list("shared-name") == []
    assert [r["run_id"] for r in await alice.runs.list("shared-name")] == [run["run_id"]]
    with pytest.raises(AuthenticationError):
        await nobody.assistants.search()


# -- the documented snippet ------------------------------------------------------------


def test_the_python_snippet_in_docs_clients_runs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNYARD_DEMO_SPEED", "0")  # the approval demo's cool-off, skipped
    docs = (REPO / "docs" / "clients.md").read_text()
    section = docs.split("## LangGraph SDK", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    with serve_in_thread(make_app(store="memory://")) as url:
        exec(snippet.replace("http://127.0.0.1:8000", url), {})  # the demo's pipelines, as the page says
    printed = capsys.readouterr().out
    assert "'chat'" in printed and "'approval'" in printed
    assert "Ada" in printed.split("values:", 1)[0]  # streamed tokens
    assert "asked:" in printed and "decision: approved" in printed


def test_a_browser_on_another_origin_reads_the_run_ids_in_content_location() -> None:
    """``useStream`` learns the run it created from ``Content-Location``: exposed to other origins."""
    with serve_in_thread(build(cors_origins="http://ui.example")) as url:
        created = httpx.post(
            f"{url}/langgraph/runs",
            json={"assistant_id": "parrot", "input": {"message": "x"}},
            headers={"Origin": "http://ui.example", "X-Client-Id": "browser"},
        )
    assert created.headers["Content-Location"].endswith(f"/runs/{created.json()['run_id']}")
    assert "content-location" in created.headers["Access-Control-Expose-Headers"].lower()
