"""A LangGraph graph served durably by ``runyard serve tests.adapters.graph_app:app``
(configured by RUNYARD_* variables), with LangGraph's saver on the store's
database. Each node calls a fake API on loopback (``x-owner`` = the node), so
a test counts node executions across processes, a killed one included."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

import httpx
from langgraph.graph import START, StateGraph
from langgraph.types import interrupt

from runyard import Runyard, Settings
from runyard.adapters.langgraph import langgraph_pipeline
from runyard.adapters.langgraph_savers import add_saver


class Work(TypedDict, total=False):
    api: str
    delay: float  # how long each node's call takes
    ask: bool  # whether "review" asks a person
    done: Annotated[list[str], operator.add]
    approved: Any


async def call(node: str, state: Work) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            state["api"], params={"delay": state["delay"]}, headers={"x-owner": node}, timeout=30
        )
        response.raise_for_status()
    return {"done": [node]}


async def first(state: Work) -> dict[str, Any]:
    return await call("first", state)


async def second(state: Work) -> dict[str, Any]:
    return await call("second", state)


def review(state: Work) -> dict[str, Any]:
    return {"approved": interrupt({"approve": state["done"]}) if state.get("ask") else "auto"}


async def third(state: Work) -> dict[str, Any]:
    return await call("third", state)


def build_graph_app(settings: Settings) -> Runyard:
    graph = StateGraph(Work)
    for node in (first, second, review, third):
        graph.add_node(node.__name__, node)
    graph.add_edge(START, "first")
    graph.add_edge("first", "second")
    graph.add_edge("second", "review")
    graph.add_edge("review", "third")
    app = Runyard(settings)
    saver = add_saver(app)
    app.pipeline("work", retries=2)(
        langgraph_pipeline(
            graph.compile(), saver=saver, output=lambda s: {"done": s["done"], "approved": s["approved"]}
        )
    )
    return app


app = build_graph_app(Settings())
