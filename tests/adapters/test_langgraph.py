"""``runyard.adapters.langgraph``: a compiled graph of plain functions (and
LangChain's fake chat model) served as a pipeline. Its ``updates``, ``messages``
and ``custom`` stream parts become events, and the run's session is its thread."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, TypedDict

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import interrupt

from runyard import RunContext, Runyard, Settings, current_run
from runyard.adapters.langgraph import langgraph_pipeline, run_graph
from runyard.errors import InvalidAnswer
from tests.adapters.runs import OWNER, finish, run_to_end, until_waiting


class State(MessagesState):
    turns: int


class Draft(TypedDict, total=False):
    draft: str
    approved: str


async def plan(state: State) -> dict[str, Any]:
    write = get_stream_writer()
    write({"type": "plan.step", "step": "outline"})  # names its own event type
    write("thinking")  # anything else is a graph.custom event
    await current_run().progress(1, 2, "planned")  # nodes reach their run too
    return {"turns": state.get("turns", 0) + 1}


def respond(state: State) -> dict[str, Any]:
    question = state["messages"][-1].content
    return {"messages": [AIMessage(f"Turn {state['turns']}: you asked {question}")]}


def chat_graph() -> Any:
    graph = StateGraph(State)
    graph.add_node("plan", plan)
    graph.add_node("respond", respond)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "respond")
    graph.add_edge("respond", END)
    return graph.compile(checkpointer=InMemorySaver())


def build() -> Runyard:
    app = Runyard(Settings(store="memory://"))
    app.pipeline("assistant")(
        langgraph_pipeline(
            chat_graph(),
            input=lambda run_input: {"messages": [HumanMessage(run_input["question"])]},
            output=lambda state: {"reply": state["messages"][-1].content, "turns": state["turns"]},
        )
    )
    return app


async def test_updates_messages_and_custom_parts_become_events() -> None:
    async with build().running() as rt:
        done = await run_to_end(rt, "assistant", {"question": "why?"})

    assert done.run.status == "succeeded"
    assert done.run.output == {"reply": "Turn 1: you asked why?", "turns": 1}
    assert done.of_type("plan.step") == [{"step": "outline"}]
    assert done.of_type("graph.custom") == ["thinking"]
    assert done.of_type("progress")[0]["message"] == "planned"
    plan_update, respond_update = done.of_type("graph.update")
    assert plan_update == {"node": "plan", "update": {"turns": 1}}
    [message] = respond_update["update"]["messages"]  # a LangChain message, as JSON
    assert respond_update["node"] == "respond"
    assert message["type"] == "ai" and message["content"] == "Turn 1: you asked why?"
    assert done.text() == "Turn 1: you asked why?"
    graph_events = [t for t in done.types() if t.startswith(("graph.", "plan.", "token"))]
    assert graph_events == [
        "graph.values",  # the input state
        "plan.step",
        "graph.custom",
        "graph.update",
        "graph.values",
        "token",
        "graph.update",
        "graph.values",  # the state after each step: what /langgraph streams as values
    ]
    assert done.of_type("graph.values")[-1]["values"]["turns"] == 1


async def test_the_session_is_the_graphs_thread() -> None:
    async with build().running() as rt:
        first = await run_to_end(rt, "assistant", {"question": "one"})
        second = await run_to_end(rt, "assistant", {"question": "two"}, session_id=first.run.session_id)
        elsewhere = await run_to_end(rt, "assistant", {"question": "three"})

    assert second.run.output == {"reply": "Turn 2: you asked two", "turns": 2}
    assert elsewhere.run.output == {"reply": "Turn 1: you asked three", "turns": 1}


async def test_a_thread_id_in_the_config_never_joins_two_sessions() -> None:
    app = Runyard(Settings(store="memory://"))
    shared: RunnableConfig = {"configurable": {"thread_id": "everyone"}}
    app.pipeline("assistant")(
        langgraph_pipeline(
            chat_graph(),
            input=lambda run_input: {"messages": [HumanMessage(run_input["question"])]},
            output=lambda state: state["turns"],
            config=shared,
        )
    )
    async with app.running() as rt:
        first = await run_to_end(rt, "assistant", {"question": "one"})
        second = await run_to_end(rt, "assistant", {"question": "two"})

    assert (first.run.output, second.run.output) == (1, 1)


async def test_a_chat_model_streaming_in_a_node_becomes_token_events() -> None:
    model = GenericFakeChatModel(messages=iter(["streamed from the model"]))

    async def call_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("model", call_model)
    graph.add_edge(START, "model")
    app = Runyard(Settings(store="memory://"))
    app.pipeline("model")(
        langgraph_pipeline(graph.compile(), output=lambda state: {"reply": state["messages"][-1].content})
    )

    async with app.running() as rt:
        done = await run_to_end(rt, "model", {"messages": [{"role": "user", "content": "hi"}]})

    assert done.run.output == {"reply": "streamed from the model"}
    assert [t["text"] for t in done.of_type("token")] == ["streamed", " ", "from", " ", "the", " ", "model"]
    [update] = done.of_type("graph.update")
    assert update["update"]["messages"][0]["content"] == "streamed from the model"


def publishing_graph(calls: Counter[str]) -> Any:
    """draft -> review (asks a person) -> publish, counting each node's calls."""

    def draft(state: Draft) -> dict[str, Any]:
        calls["draft"] += 1
        return {"draft": state["draft"].upper()}

    def review(state: Draft) -> dict[str, Any]:
        calls["review"] += 1  # a node that interrupts runs again, from its start, when resumed
        return {"approved": interrupt({"question": f"publish {state['draft']}?"})}

    def publish(state: Draft) -> dict[str, Any]:
        calls["publish"] += 1
        return {}

    graph = StateGraph(Draft)
    graph.add_node("draft", draft)
    graph.add_node("review", review)
    graph.add_node("publish", publish)
    graph.add_edge(START, "draft")
    graph.add_edge("draft", "review")
    graph.add_edge("review", "publish")
    return graph.compile(checkpointer=InMemorySaver())


async def test_an_interrupt_asks_and_the_answer_resumes_the_graph_past_the_nodes_it_ran(store_url: str) -> None:
    calls: Counter[str] = Counter()
    app = Runyard(Settings(store=store_url))
    app.pipeline("publish")(langgraph_pipeline(publishing_graph(calls)))

    async with app.running() as rt:
        run = await rt.create_run(OWNER, "publish", {"draft": "post-1"})
        waiting = await until_waiting(rt, run)
        assert waiting.snapshot()["waiting_for"]["request"] == {"question": "publish POST-1?"}
        assert calls == {"draft": 1, "review": 1}
        await rt.answer(OWNER, run.run_id, "yes")
        done = await finish(rt, run)

    assert done.run.status == "succeeded"
    assert done.run.output == {"draft": "POST-1", "approved": "yes"}
    assert calls == {"draft": 1, "review": 2, "publish": 1}
    updates = [update["node"] for update in done.of_type("graph.update")]
    assert updates == ["draft", "review", "publish"]  # every event once, over both executions
    [interrupted] = done.of_type("graph.interrupt")
    assert interrupted["interrupts"][0]["value"] == {"question": "publish POST-1?"}
    [asked] = done.of_type("input.requested")
    assert asked["request"] == {"question": "publish POST-1?"}


async def test_several_interrupts_are_asked_in_turn_and_each_answer_goes_to_its_own() -> None:
    calls: Counter[str] = Counter()

    def title(state: Draft) -> dict[str, Any]:
        calls["title"] += 1
        return {"draft": interrupt("title?")}

    def approve(state: Draft) -> dict[str, Any]:
        calls["approve"] += 1
        return {"approved": interrupt(f"approve {state['draft']}?")}

    graph = StateGraph(Draft)
    graph.add_node("title", title)
    graph.add_node("approve", approve)
    graph.add_edge(START, "title")
    graph.add_edge("title", "approve")
    app = Runyard(Settings(store="memory://"))
    app.pipeline("two")(langgraph_pipeline(graph.compile(checkpointer=InMemorySaver())))

    async with app.running() as rt:
        run = await rt.create_run(OWNER, "two", {})
        for answer in ("Hello", "yes"):
            await until_waiting(rt, run)
            await rt.answer(OWNER, run.run_id, answer)
        done = await finish(rt, run)

    assert done.run.output == {"draft": "Hello", "approved": "yes"}
    assert [asked["request"] for asked in done.of_type("input.requested")] == ["title?", "approve Hello?"]
    assert calls == {"title": 2, "approve": 2}  # asked once, resumed once: never a third time


async def test_interrupts_raised_at_once_are_asked_in_turn_and_resume_the_graph_together() -> None:
    def title(state: Draft) -> dict[str, Any]:
        return {"draft": interrupt("title?")}

    def approve(state: Draft) -> dict[str, Any]:
        return {"approved": interrupt("approve?")}

    graph = StateGraph(Draft)
    graph.add_node("title", title)
    graph.add_node("approve", approve)
    graph.add_edge(START, "title")
    graph.add_edge(START, "approve")  # both in the first step: two interrupts pending together
    app = Runyard(Settings(store="memory://"))
    app.pipeline("parallel")(langgraph_pipeline(graph.compile(checkpointer=InMemorySaver())))

    async with app.running() as rt:
        run = await rt.create_run(OWNER, "parallel", {})
        answered: dict[str, str] = {}
        for _ in range(2):
            question = (await until_waiting(rt, run)).snapshot()["waiting_for"]["request"]
            answered[question] = f"answer to {question}"
            await rt.answer(OWNER, run.run_id, answered[question])
        done = await finish(rt, run)

    assert set(answered) == {"title?", "approve?"}
    assert done.run.output == {"draft": "answer to title?", "approved": "answer to approve?"}


async def test_an_interrupts_response_schema_checks_the_answer() -> None:
    def age(state: Draft) -> dict[str, Any]:
        return {"draft": str(interrupt("your age?", response_schema={"type": "integer", "minimum": 0}))}

    graph = StateGraph(Draft)
    graph.add_node("age", age)
    graph.add_edge(START, "age")
    app = Runyard(Settings(store="memory://"))
    app.pipeline("age")(langgraph_pipeline(graph.compile(checkpointer=InMemorySaver())))

    async with app.running() as rt:
        run = await rt.create_run(OWNER, "age", {})
        waiting = await until_waiting(rt, run)
        assert waiting.snapshot()["waiting_for"]["schema"] == {"type": "integer", "minimum": 0}
        with pytest.raises(InvalidAnswer):
            await rt.answer(OWNER, run.run_id, "old")
        await rt.answer(OWNER, run.run_id, 36)
        done = await finish(rt, run)

    assert done.run.output == {"draft": "36"}


async def test_a_run_may_run_its_graph_twice_and_each_time_is_replayed_as_itself() -> None:
    calls: Counter[str] = Counter()

    def count(state: State) -> dict[str, Any]:
        calls["count"] += 1
        return {"turns": state.get("turns", 0) + 1}

    graph = StateGraph(State)
    graph.add_node("count", count)
    graph.add_edge(START, "count")
    compiled = graph.compile(checkpointer=InMemorySaver())
    app = Runyard(Settings(store="memory://"))

    @app.pipeline("twice")
    async def twice(ctx: RunContext, input: Any) -> dict[str, Any]:
        first = await run_graph(ctx, compiled, {"messages": [HumanMessage("one")]})
        second = await run_graph(ctx, compiled, {"messages": [HumanMessage("two")]})  # the same thread, further
        verdict = await ctx.ask("fine?")
        return {"turns": [first["turns"], second["turns"]], "verdict": verdict}

    async with app.running() as rt:
        run = await rt.create_run(OWNER, "twice", None)
        await until_waiting(rt, run)
        await rt.answer(OWNER, run.run_id, "yes")
        done = await finish(rt, run)

    assert done.run.output == {"turns": [1, 2], "verdict": "yes"}
    assert calls == {"count": 2}


async def test_an_execution_cut_off_inside_the_graph_goes_on_from_its_last_checkpoint() -> None:
    """The execution ends in the middle of an invocation (here a node sleeps,
    which unwinds the pipeline as a lost worker would stop it): the next one
    does not run the nodes that had completed."""
    calls: Counter[str] = Counter()

    def first(state: Draft) -> dict[str, Any]:
        calls["first"] += 1
        return {"draft": "written"}

    async def second(state: Draft) -> dict[str, Any]:
        calls["second"] += 1
        await current_run().sleep(0.05)
        return {"approved": "later"}

    graph = StateGraph(Draft)
    graph.add_node("first", first)
    graph.add_node("second", second)
    graph.add_edge(START, "first")
    graph.add_edge("first", "second")
    app = Runyard(Settings(store="memory://"))
    app.pipeline("cut")(langgraph_pipeline(graph.compile(checkpointer=InMemorySaver())))

    async with app.running() as rt:
        done = await run_to_end(rt, "cut", {"draft": "x"})

    assert done.run.output == {"draft": "written", "approved": "later"}
    assert calls == {"first": 1, "second": 2}
    assert [update["node"] for update in done.of_type("graph.update")] == ["first", "second"]


async def test_a_custom_part_cannot_pass_for_the_runtimes_own_events() -> None:
    def node(state: Draft) -> dict[str, Any]:
        get_stream_writer()({"type": "end", "status": "succeeded"})
        return {}

    graph = StateGraph(Draft)
    graph.add_node("node", node)
    graph.add_edge(START, "node")
    app = Runyard(Settings(store="memory://"))
    app.pipeline("spoof")(langgraph_pipeline(graph.compile()))

    async with app.running() as rt:
        done = await run_to_end(rt, "spoof", {"draft": "x"})

    assert done.of_type("graph.custom") == [{"type": "end", "status": "succeeded"}]
    assert done.types().count("end") == 1 and done.types()[-1] == "end"


async def test_with_subgraphs_an_update_says_which_subgraph_it_came_from() -> None:
    inner = StateGraph(Draft)
    inner.add_node("review", lambda state: {"approved": "auto"})
    inner.add_edge(START, "review")
    outer = StateGraph(Draft)
    outer.add_node("child", inner.compile())
    outer.add_edge(START, "child")
    app = Runyard(Settings(store="memory://"))
    app.pipeline("nested")(langgraph_pipeline(outer.compile(), subgraphs=True))

    async with app.running() as rt:
        done = await run_to_end(rt, "nested", {"draft": "x"})

    review, child = done.of_type("graph.update")
    assert review["node"] == "review" and review["ns"][0].startswith("child:")
    assert child == {"node": "child", "update": {"draft": "x", "approved": "auto"}, "ns": []}  # its whole state
    assert done.run.output == {"draft": "x", "approved": "auto"}


async def test_cancelling_the_run_stops_the_graph_at_once() -> None:
    started, stopped = asyncio.Event(), asyncio.Event()

    async def slow(state: Draft) -> dict[str, Any]:
        started.set()
        try:
            await asyncio.sleep(30)
        finally:
            stopped.set()
        return {}

    graph = StateGraph(Draft)
    graph.add_node("slow", slow)
    graph.add_edge(START, "slow")
    app = Runyard(Settings(store="memory://"))
    app.pipeline("slow")(langgraph_pipeline(graph.compile()))

    async with app.running() as rt:
        run = await rt.create_run(OWNER, "slow", {"draft": "x"})
        async with asyncio.timeout(10):
            await started.wait()
        await rt.cancel_run(OWNER, run.run_id)
        done = await rt.wait(run, 10)
        async with asyncio.timeout(5):
            await stopped.wait()

    assert done is not None and done.status == "cancelled"
