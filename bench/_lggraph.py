"""The graph ``langgraph_server.py`` runs on every server: one node that emits
``count`` custom events with LangGraph's ``get_stream_writer()``.

LangGraph's own server (``langgraph dev``) loads it from a copy of this file;
runyard serves it through its LangGraph adapter (``_lgapp.py``). It imports
LangGraph only, so that it loads in the benchmark's separate virtualenv too.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypedDict

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph


class Ticks(TypedDict, total=False):
    marker: str  # echoed in every event, to tell the runs apart
    count: int
    emitted: int


async def tick(state: Ticks) -> dict[str, Any]:
    """Write ``count`` events ``{"type": "tick", "marker", "i"}``, yielding to the
    event loop after each (as a node streaming a model's tokens does), so the
    server delivers them while the node runs."""
    write = get_stream_writer()
    marker = state["marker"]
    for i in range(state["count"]):
        write({"type": "tick", "marker": marker, "i": i})
        await asyncio.sleep(0)
    return {"emitted": state["count"]}


builder = StateGraph(Ticks)
builder.add_node("tick", tick)
builder.add_edge(START, "tick")
builder.add_edge("tick", END)
graph = builder.compile()
