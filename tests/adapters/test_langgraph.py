"""``runyard.adapters.langgraph``: a compiled graph of plain functions (and
LangChain's fake chat model) served as a pipeline. Its ``updates``, ``messages``
and ``custom`` stream parts become events, and the run's session is its thread."""

from __future__ import annotations

import asyncio
from typing import Any, TypedDict

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command, interrupt

from runyard import Runyard, Settings, current_run
from runyard.adapters.langgraph import langgraph_pipeline
from tests.adapters.runs import OWNER, run_to_end


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
    assert graph_events == ["plan.step", "graph.custom", "graph.update", "token", "graph.update"]


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


async def test_an_interrupted_graph_resumes_in_the_next_run_of_its_session() -> None:
    def ask(state: Draft) -> dict[str, Any]:
        return {"approved": interrupt({"question": f"publish {state['draft']}?"})}

    graph = StateGraph(Draft)
    graph.add_node("ask", ask)
    graph.add_edge(START, "ask")
    app = Runyard(Settings(store="memory://"))
    app.pipeline("publish")(
        langgraph_pipeline(
            graph.compile(checkpointer=InMemorySaver()),
            input=lambda run_input: Command(resume=run_input["answer"]) if "answer" in run_input else run_input,
        )
    )

    async with app.running() as rt:
        asked = await run_to_end(rt, "publish", {"draft": "post-1"})
        answered = await run_to_end(rt, "publish", {"answer": "yes"}, session_id=asked.run.session_id)

    [waiting] = asked.of_type("graph.interrupt")
    assert waiting["interrupts"][0]["value"] == {"question": "publish post-1?"}
    assert answered.run.output == {"draft": "post-1", "approved": "yes"}
    assert answered.of_type("graph.update") == [{"node": "ask", "update": {"approved": "yes"}}]


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
