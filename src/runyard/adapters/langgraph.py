"""A compiled LangGraph graph as a runyard pipeline.

    app.pipeline("assistant")(langgraph_pipeline(graph, input=..., output=...))

The graph runs with ``stream_mode=["updates", "messages", "custom", "values"]``
and its thread is the run's session (``thread_id = ctx.session.key``), so a graph
compiled with a checkpointer carries its state from one run of a session to
the next, and a run cancelled or timed out stops the graph at once. Its stream
becomes events:

- ``values``: a ``graph.values`` event ``{"values"}``, the graph's state after
  each step (what the LangGraph API at ``/langgraph`` streams as ``values``);
- ``updates``: one ``graph.update`` event ``{"node", "update"}`` per node that
  ran (``"ns"`` too, the subgraph's path, when streaming subgraphs); an
  interrupt becomes ``graph.interrupt`` ``{"interrupts": [{"id", "value"}]}``;
- ``messages``: the text of AI messages and chunks, as ``token`` events
  ``{"text", "message_id", "node"}`` (the message's id and the node it came from);
- ``custom`` (a node's ``get_stream_writer()``): a dict naming its ``"type"``
  becomes an event of that type carrying the dict's other keys; anything else
  a ``graph.custom`` event carrying the payload.

Durable (``run_graph``, which ``langgraph_pipeline`` uses), for a graph
compiled with a checkpointer: a node's ``interrupt(value)`` becomes
``ctx.ask(value)`` (the run waits without a worker; the interrupt's
``response_schema``, if any, checks the answer) and the answer goes back to
the graph as ``Command(resume={interrupt_id: answer})``. The checkpointer
holds the graph's progress, each checkpoint tagged with the run and its
invocation of the graph; runyard's journal holds which invocation the run is
at (see ``run_graph``), so a run that executes again (after an answer, a
drain, a lost worker) never executes a completed node again.

Nodes reach their run with ``runyard.current_run()`` as well.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import Any, cast
from weakref import WeakKeyDictionary

from pydantic import BaseModel

from runyard.adapters._support import is_event_type, jsonable, message_text, missing_extra
from runyard.context import RunContext

try:
    from langchain_core.messages import AIMessage
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.pregel import Pregel
    from langgraph.types import Command, Durability, StreamMode
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise missing_extra("langgraph", "langgraph", "langgraph") from exc

__all__ = ["langgraph_pipeline", "run_graph", "stream_graph"]

Graph = Pregel[Any, Any, Any, Any]
STREAM_MODES: list[StreamMode] = ["updates", "messages", "custom", "values"]
# Checkpoint metadata naming the run, and its invocation of the graph, that wrote the checkpoint.
RUN_KEY = "runyard_run_id"
INVOCATION_KEY = "runyard_invocation"
# Each execution's invocations of each graph (by name) so far: a run may invoke a graph more than once.
_INVOCATIONS: WeakKeyDictionary[RunContext, Counter[str]] = WeakKeyDictionary()


async def stream_graph(
    ctx: RunContext,
    graph: Graph,
    input: Any,
    *,
    config: RunnableConfig | None = None,
    subgraphs: bool = False,
    durability: Durability | None = None,
) -> Any:
    """Run ``graph`` on ``input`` (a state, or a ``Command`` to resume) as the
    run ``ctx``, in the thread of its session, turning its stream into events;
    returns the graph's final state (its last ``values``). ``durability`` is
    LangGraph's (``None``: its default)."""
    merged = thread_config(ctx, config)
    state: Any = None
    ns: tuple[str, ...]
    mode: str
    chunk: Any
    # astream is an async generator (typed as an iterator): it has an aclose()
    stream = cast(
        AsyncGenerator[Any, None],
        graph.astream(input, merged, stream_mode=STREAM_MODES, subgraphs=subgraphs, durability=durability),
    )
    async with aclosing(stream):  # a cancelled run stops the graph's tasks now, not when collected
        async for part in stream:
            item = cast(tuple[Any, ...], part)  # (mode, chunk), or (ns, mode, chunk) with subgraphs
            ns, mode, chunk = item if subgraphs else ((), *item)
            if mode == "values":
                if not ns:
                    state = chunk
                    # the state at an interrupt repeats the last one: the interrupt is asked (run_graph)
                    if not (isinstance(chunk, Mapping) and "__interrupt__" in chunk):
                        await ctx.emit("graph.values", {"values": jsonable(chunk)})
            elif mode == "updates":
                await _updates(ctx, chunk, list(ns) if subgraphs else None)
            elif mode == "messages":
                message, metadata = chunk
                if isinstance(message, AIMessage) and (text := message_text(message)):
                    node = metadata.get("langgraph_node") if isinstance(metadata, Mapping) else None
                    await ctx.emit("token", {"text": text, "message_id": message.id, "node": node})
            elif mode == "custom":
                await _custom(ctx, chunk)
    return state


def thread_config(ctx: RunContext, config: RunnableConfig | None) -> RunnableConfig:
    """``config`` in the thread of the run's session."""
    merged: RunnableConfig = {**(config or {})}
    # The session's thread always: a thread_id given in ``config`` would share one thread between sessions.
    # Its key, not its id: two owners may choose the same session id (``runyard.session_ids``).
    merged["configurable"] = {**merged.get("configurable", {}), "thread_id": ctx.session.key}
    return merged


async def run_graph(
    ctx: RunContext,
    graph: Graph,
    input: Any,
    *,
    config: RunnableConfig | None = None,
    subgraphs: bool = False,
) -> Any:
    """``stream_graph``, durably: each ``interrupt(value)`` the graph raises is
    asked with ``ctx.ask(value)`` and its answer resumes the graph, until the
    graph ends; returns its final state.

    The run re-executes its pipeline from the start each time, so what the run
    does with the graph must be the same sequence every time. It is: each
    invocation of the graph is a step recording the interrupts it ended on
    and its last checkpoint, followed by the ``ctx.ask`` of each interrupt; the
    state returned is the one at the last invocation's checkpoint, whatever
    the thread did since. On a later execution the recorded
    invocations and answers return at once, and only the first invocation not
    recorded runs. Each checkpoint it writes carries the run and the
    invocation in its metadata, so that invocation knows whether an earlier
    execution was cut off in it: if the thread's latest checkpoint is its own,
    it goes on from there (input ``None``) and the nodes that completed are
    not run again; otherwise it starts (the input, or the answers as a
    ``Command``).

    A graph compiled without a checkpointer cannot be resumed: it is streamed
    once, as ``stream_graph`` does, and runs again from its start if the run
    executes again."""
    if not isinstance(graph.checkpointer, BaseCheckpointSaver):
        return await stream_graph(ctx, graph, input, config=config, subgraphs=subgraphs)
    payload = input
    # Counted per execution like the journal counts the steps: the same numbers on every execution.
    invocations = _INVOCATIONS.setdefault(ctx, Counter())
    while True:
        invocations[graph.name] += 1
        tagged = _tagged(thread_config(ctx, config), ctx.run_id, invocations[graph.name])
        ended = await ctx.step(f"{graph.name}:invoke", _invoke, ctx, graph, payload, tagged, subgraphs)
        if not ended["interrupts"]:
            break
        # One answer per interrupt, in turn; a map by id resumes one interrupt as well as several.
        answers = {item["id"]: await ctx.ask(item["value"], schema=item["schema"]) for item in ended["interrupts"]}
        payload = Command(resume=answers)
    # The state as this invocation left it (the thread may have gone further since, in a later call).
    thread = thread_config(ctx, config)
    at_end: RunnableConfig = {
        **thread,
        "configurable": {**thread["configurable"], "checkpoint_id": ended["checkpoint"]},
    }
    return (await graph.aget_state(at_end)).values


def _tagged(config: RunnableConfig, run_id: str, invocation: int) -> RunnableConfig:
    """``config`` whose checkpoints say which run and which of its invocations wrote them."""
    return {**config, "metadata": {**config.get("metadata", {}), RUN_KEY: run_id, INVOCATION_KEY: invocation}}


async def _invoke(ctx: RunContext, graph: Graph, payload: Any, config: RunnableConfig, subgraphs: bool) -> Any:
    """One invocation of the graph, as a JSON record of the interrupts it ended
    on and of its last checkpoint (which holds the state it ended with)."""
    saver = cast(BaseCheckpointSaver[Any], graph.checkpointer)
    latest = await saver.aget_tuple(config)
    mine = {key: config["metadata"][key] for key in (RUN_KEY, INVOCATION_KEY)}
    if latest is not None and all(latest.metadata.get(key) == value for key, value in mine.items()):
        payload = None  # an earlier execution got this invocation to a checkpoint: go on from there
    # "sync": each step's checkpoint is written before the next step begins, so a
    # worker lost in a node finds every node before it checkpointed (with
    # LangGraph's default, "async", the last one may still be in flight, and run
    # again). Measured per node (bench/langgraph_savers.py), the two are within
    # the noise of each other.
    await stream_graph(ctx, graph, payload, config=config, subgraphs=subgraphs, durability="sync")
    snapshot = await graph.aget_state(config)
    interrupts = [
        {"id": item.id, "value": jsonable(item.value), "schema": _schema(item.response_schema)}
        for item in snapshot.interrupts
    ]
    return {"interrupts": interrupts, "checkpoint": snapshot.config["configurable"]["checkpoint_id"]}


def _schema(schema: Any) -> dict[str, Any] | None:
    """An interrupt's ``response_schema`` as the JSON Schema its answer is checked against."""
    if isinstance(schema, dict):
        return schema
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_json_schema()
    return None  # another type says nothing a JSON answer could be checked against


def langgraph_pipeline(
    graph: Graph,
    *,
    input: Callable[[Any], Any] | None = None,
    output: Callable[[Any], Any] | None = None,
    config: RunnableConfig | None = None,
    subgraphs: bool = False,
    saver: str | None = None,
) -> Callable[[RunContext, Any], Awaitable[Any]]:
    """A pipeline function running ``graph`` with ``run_graph``, for ``app.pipeline(name)``.

    ``input`` maps the run's input to the graph's (default: as it is), ``output``
    the graph's final state to the run's output (default: the state as JSON).
    ``saver`` names the app's resource holding the checkpointer the graph runs
    with (``langgraph_savers.add_saver``: LangGraph's saver on the store's
    database) instead of the one it was compiled with."""
    bound_to: list[tuple[Any, Graph]] = []  # (the saver, the graph with it): one saver per app start

    def bound(ctx: RunContext) -> Graph:
        if saver is None:
            return graph
        checkpointer = ctx.resources[saver]
        if not bound_to or bound_to[0][0] is not checkpointer:
            bound_to[:] = [(checkpointer, graph.copy({"checkpointer": checkpointer}))]
        return bound_to[0][1]

    async def pipeline(ctx: RunContext, run_input: Any) -> Any:
        graph_input = input(run_input) if input is not None else run_input
        state = await run_graph(ctx, bound(ctx), graph_input, config=config, subgraphs=subgraphs)
        return output(state) if output is not None else jsonable(state)

    pipeline.__doc__ = f"The LangGraph graph {graph.name!r}."
    return pipeline


async def _updates(ctx: RunContext, chunk: Any, ns: list[str] | None) -> None:
    if not isinstance(chunk, Mapping):
        return
    for node, update in chunk.items():
        if node == "__interrupt__":
            interrupts = [{"id": getattr(i, "id", None), "value": jsonable(getattr(i, "value", i))} for i in update]
            await ctx.emit("graph.interrupt", {"interrupts": interrupts})
            continue
        data: dict[str, Any] = {"node": str(node), "update": jsonable(update)}
        if ns is not None:
            data["ns"] = ns
        await ctx.emit("graph.update", data)


async def _custom(ctx: RunContext, payload: Any) -> None:
    if isinstance(payload, Mapping) and is_event_type(payload.get("type")):
        await ctx.emit(str(payload["type"]), {str(k): jsonable(v) for k, v in payload.items() if k != "type"})
    else:
        await ctx.emit("graph.custom", jsonable(payload))
