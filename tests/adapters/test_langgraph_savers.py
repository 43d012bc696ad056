"""``runyard.adapters.langgraph_savers``: LangGraph's own savers on the database
of the app's store make a graph's progress durable: a graph compiled without a
checkpointer, served with ``saver=``, asks and resumes; and what a saver wrote
on SQLite or PostgreSQL, a saver opened later on the same database (after a
restart, in another process) goes on from."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any, TypedDict

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph
from langgraph.types import Command, interrupt

from runyard import Runyard, Settings
from runyard.adapters.langgraph import langgraph_pipeline
from runyard.adapters.langgraph_savers import SAVER, add_saver, open_saver
from runyard.errors import ConfigurationError
from tests.adapters.runs import OWNER, finish, until_waiting


class Post(TypedDict, total=False):
    draft: str
    approved: str


def review_graph(calls: Counter[str]) -> Any:
    """write -> approve (asks), uncompiled: each test gives its own checkpointer."""

    def write(state: Post) -> dict[str, Any]:
        calls["write"] += 1
        return {"draft": f"{state['draft']}, written"}

    def approve(state: Post) -> dict[str, Any]:
        return {"approved": interrupt(f"publish {state['draft']}?")}

    graph = StateGraph(Post)
    graph.add_node("write", write)
    graph.add_node("approve", approve)
    graph.add_edge(START, "write")
    graph.add_edge("write", "approve")
    return graph


async def test_a_graph_served_with_the_apps_saver_on_the_stores_database_asks_and_resumes(store_url: str) -> None:
    if not store_url.startswith("memory"):  # LangGraph's SQL savers are packages of their own, not (yet) an extra
        pytest.importorskip(f"langgraph.checkpoint.{'sqlite' if store_url.startswith('sqlite') else 'postgres'}")
    calls: Counter[str] = Counter()
    app = Runyard(Settings(store=store_url))
    app.pipeline("review")(langgraph_pipeline(review_graph(calls).compile(), saver=add_saver(app)))

    async with app.running() as rt:
        saver = app.resources[SAVER]
        assert isinstance(saver, InMemorySaver) == store_url.startswith("memory")
        run = await rt.create_run(OWNER, "review", {"draft": "post"})
        waiting = await until_waiting(rt, run)
        assert waiting.snapshot()["waiting_for"]["request"] == "publish post, written?"
        await rt.answer(OWNER, run.run_id, "yes")
        done = await finish(rt, run)

    assert done.run.output == {"draft": "post, written", "approved": "yes"}
    assert calls == {"write": 1}


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    # LangGraph's SQL savers are packages of their own, not (yet) in runyard's langgraph extra.
    pytest.importorskip(f"langgraph.checkpoint.{'postgres' if request.param == 'postgresql' else 'sqlite'}")
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path}/runyard.db"


async def test_a_saver_opened_later_on_the_same_database_goes_on_from_where_the_graph_was(database_url: str) -> None:
    calls: Counter[str] = Counter()
    config: Any = {"configurable": {"thread_id": "session-1"}}
    async with open_saver(database_url) as saver:
        await review_graph(calls).compile(checkpointer=saver).ainvoke({"draft": "post"}, config)
    async with open_saver(database_url) as saver:  # as a new process would, after a restart
        state = await review_graph(calls).compile(checkpointer=saver).ainvoke(Command(resume="yes"), config)

    assert state == {"draft": "post, written", "approved": "yes"}
    assert calls == {"write": 1}
    if database_url.startswith("sqlite"):  # the store's own file, not a file beside it
        path = database_url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"checkpoints", "writes"} <= tables


async def test_a_store_with_no_saver_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="no LangGraph saver"):
        async with open_saver("mysql://localhost/db"):
            pass
