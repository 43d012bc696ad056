"""What a LangGraph checkpointer costs per node, to choose the one that makes
``runyard.adapters.langgraph`` durable (issue 12 item 7).

A linear graph of ``NODES`` trivial nodes is invoked ``ROUNDS`` times on fresh
threads with: no checkpointer, ``InMemorySaver``, LangGraph's ``AsyncSqliteSaver``
on a file, and LangGraph's ``AsyncPostgresSaver`` on the loopback server (a
database of its own, dropped after). Each node's cost is the invocation's time
over ``NODES``; the figure is the median (and p90) over the rounds. The
durable modes ``"async"`` (LangGraph's default: a checkpoint is written while
the next step runs) and ``"sync"`` (written before it) are both measured.

    .venv/bin/python bench/langgraph_savers.py [--postgres postgresql://postgres@127.0.0.1:5432/postgres]

Needs ``langgraph-checkpoint-sqlite`` and ``langgraph-checkpoint-postgres``
(with ``psycopg``); a saver whose package is missing is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph

NODES = 20
ROUNDS = 60


class Count(TypedDict):
    n: int


def graph(saver: BaseCheckpointSaver[Any] | None) -> Any:
    builder = StateGraph(Count)
    previous = START
    for i in range(NODES):
        name = f"node{i}"
        builder.add_node(name, lambda state: {"n": state["n"] + 1})
        builder.add_edge(previous, name)
        previous = name
    return builder.compile(checkpointer=saver)


async def per_node_us(saver: BaseCheckpointSaver[Any] | None, durability: str) -> tuple[float, float]:
    compiled = graph(saver)
    times = []
    for _ in range(ROUNDS):
        config = {"configurable": {"thread_id": uuid.uuid4().hex}}
        started = time.perf_counter()
        options = {"durability": durability} if saver is not None else {}
        state = await compiled.ainvoke({"n": 0}, config, **options)
        times.append((time.perf_counter() - started) / NODES * 1e6)
        assert state["n"] == NODES
    times = times[5:]  # warm-up
    return statistics.median(times), statistics.quantiles(times, n=10)[-1]


@contextlib.asynccontextmanager
async def sqlite_saver() -> AsyncIterator[BaseCheckpointSaver[Any]]:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    with tempfile.TemporaryDirectory() as folder:
        async with AsyncSqliteSaver.from_conn_string(str(Path(folder) / "runyard.db")) as saver:
            yield saver


@contextlib.asynccontextmanager
async def postgres_saver(url: str) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    import psycopg
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    name = f"bench_savers_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        await admin.execute(f"CREATE DATABASE {name}")
    try:
        async with AsyncPostgresSaver.from_conn_string(url.rsplit("/", 1)[0] + f"/{name}") as saver:
            await saver.setup()
            yield saver
    finally:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
            await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


async def main(postgres: str) -> None:
    print(f"{NODES} nodes, {ROUNDS} rounds: µs per node, median / p90")
    print(f"  none                 {'%.0f / %.0f' % await per_node_us(None, 'exit')}")
    for durability in ("async", "sync"):
        print(f"  memory     {durability:5}     {'%.0f / %.0f' % await per_node_us(InMemorySaver(), durability)}")
        for label, opener in (("sqlite", sqlite_saver), ("postgres", lambda: postgres_saver(postgres))):
            try:
                async with opener() as saver:
                    print(f"  {label:10} {durability:5}     {'%.0f / %.0f' % await per_node_us(saver, durability)}")
            except ImportError as exc:
                print(f"  {label:10} skipped: {exc}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    asyncio.run(main(parser.parse_args().postgres))
