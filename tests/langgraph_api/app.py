"""The app the LangGraph SDKs are tested against: plain pipelines (tokens,
custom events, a question, a failure, a slow ticker) and a LangGraph graph
served through the adapter, which streams its real state."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import interrupt
from pydantic import BaseModel

from runyard import RunContext, Runyard, Settings
from runyard.adapters.langgraph import langgraph_pipeline

SECRET = "s3cret-for-langgraph-tests-0123456789abcdef"


class Said(BaseModel):
    message: str


class Ticks(BaseModel):
    count: int
    interval_ms: int = 0


class Review(MessagesState):
    approved: str


def draft(state: Review) -> dict[str, Any]:
    return {"messages": [AIMessage("a draft about " + str(state["messages"][-1].content), id="draft-1")]}


def review(state: Review) -> dict[str, Any]:
    return {"approved": interrupt({"question": "publish?"})}


def review_graph() -> Any:
    graph = StateGraph(Review)
    graph.add_node("draft", draft)
    graph.add_node("review", review)
    graph.add_edge(START, "draft")
    graph.add_edge("draft", "review")
    graph.add_edge("review", END)
    return graph.compile(checkpointer=InMemorySaver(), name="review")


class Writes(MessagesState):
    count: int


async def write(state: Writes) -> dict[str, Any]:
    writer = get_stream_writer()
    for i in range(state["count"]):
        writer({"type": "tick", "i": i, "text": f'",ts":"{i}'})  # data that looks like the frame around it
        await asyncio.sleep(0.002)
    return {}


def writer_graph() -> Any:
    graph = StateGraph(Writes)
    graph.add_node("write", write)
    graph.add_edge(START, "write")
    graph.add_edge("write", END)
    return graph.compile(name="writer")


def build(**settings: Any) -> Runyard:
    app = Runyard(Settings(**{"store": "memory://", **settings}))

    @app.pipeline("parrot", input_model=Said)
    async def parrot(ctx: RunContext, input: Said) -> dict[str, Any]:
        """Says the message back, a word at a time."""
        await ctx.phase("speak", "started")
        for word in input.message.split(" "):
            await ctx.token(word + " ")
        await ctx.emit("note", {"words": len(input.message.split(" "))})
        await ctx.phase("speak", "done")
        return {"reply": input.message}

    @app.pipeline("approval", input_model=Said)
    async def approval(ctx: RunContext, input: Said) -> dict[str, Any]:
        """Asks a person before it answers."""
        answer = await ctx.ask({"question": f"approve {input.message}?"})
        return {"message": input.message, "approved": answer}

    @app.pipeline("ticker", input_model=Ticks)
    async def ticker(ctx: RunContext, input: Ticks) -> dict[str, Any]:
        for i in range(input.count):
            await ctx.emit("tick", {"i": i})
            await asyncio.sleep(input.interval_ms / 1000)
        return {"count": input.count}

    @app.pipeline("boom", input_model=Said)
    async def boom(ctx: RunContext, input: Said) -> None:
        await ctx.token("almost ")
        raise RuntimeError("the model is on fire")

    app.pipeline("review")(langgraph_pipeline(review_graph()))
    app.pipeline("writer")(langgraph_pipeline(writer_graph()))
    return app


def token(sub: str) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
