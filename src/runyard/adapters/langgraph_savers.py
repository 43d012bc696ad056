"""LangGraph's own checkpoint savers, on the database of the app's store: what
makes a graph's progress durable in runyard (``langgraph_pipeline(saver=...)``).

    add_saver(app)                                   # a resource, opened at start-up
    app.pipeline("assistant")(langgraph_pipeline(graph, saver=SAVER))

``memory://`` gets LangGraph's ``InMemorySaver`` (it lives as long as the memory
store: the process); ``sqlite:///path.db`` its ``AsyncSqliteSaver`` on the same
file (its own tables, its own connection, waiting for SQLite's lock as long as
the store's writes do); ``postgresql://`` its ``AsyncPostgresSaver`` on the same
database (its own tables and a small pool; ``setup()`` creates them).

Why LangGraph's savers and not a saver on runyard's own store (issue 12 item 7).
Measured with ``bench/langgraph_savers.py`` (20 trivial nodes, µs per node,
medians over 4 runs on the 2-core machine at load 4 to 5, so wide): no
checkpointer 230-580, InMemorySaver 300-770, SQLite 1,400-3,600, PostgreSQL
1,300-12,000 (it commits each write apart: ``synchronous_commit=off`` about
halves it). A saver on runyard's store would also write once per checkpoint,
at what a recorded step costs (the target: 1 ms on SQLite, 3 ms on
PostgreSQL); it could be faster on PostgreSQL by writing a checkpoint and its
writes in one transaction, but not by an order. What decides is the rest:

- LangGraph's savers are LangGraph's: pending writes per task (a node that
  completed is not run again even when a sibling in its superstep failed),
  state history and time travel, migrations, and the semantics every LangGraph
  user already relies on. A saver of ours would have to match all of that;
- runyard's store has no place for it: step records belong to one run, are
  written once (first wins) and read only when an execution starts, in order;
  a checkpointer needs "the thread's latest checkpoint and its pending writes"
  at any time, shared by the runs of a session (the thread). That needs a new
  table and store API on three backends (the runtime's to add, not an adapter's).

What the adapter adds on top is what the savers lack for runyard: which
invocation of the graph a run is at is in the run's journal (fenced steps),
and each checkpoint names the run and invocation that wrote it (metadata), so
an execution knows whether to start, resume with an answer or go on from the
latest checkpoint. Left to runyard's side: checkpoints of a deleted session's
thread are not deleted with it, and a worker whose lease moved on may still
write a checkpoint (the savers are not fenced; the next execution then goes on
from it, which runs no completed node twice).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from runyard.adapters._support import missing_extra
from runyard.errors import ConfigurationError
from runyard.store.sqlite.file import busy_timeout_ms, database_path

try:
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.checkpoint.memory import InMemorySaver
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise missing_extra("langgraph", "langgraph", "langgraph") from exc

if TYPE_CHECKING:
    from runyard.app import Runyard

__all__ = ["SAVER", "add_saver", "open_saver"]

SAVER = "langgraph.saver"
POOL_SIZE = 10  # PostgreSQL connections of the saver, per process


def add_saver(app: Runyard, name: str = SAVER) -> str:
    """Declare the resource ``name``: LangGraph's saver on the database of the
    app's store (``app.settings.store`` as the app starts), closed at shutdown.
    Returns ``name``, for ``langgraph_pipeline(saver=...)``."""

    @app.resource(name)
    async def saver() -> AsyncIterator[BaseCheckpointSaver[Any]]:
        async with open_saver(app.settings.store) as opened:
            yield opened

    return name


@asynccontextmanager
async def open_saver(store_url: str) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """LangGraph's saver on the database of the store at ``store_url``, its tables set up."""
    scheme = store_url.partition("://")[0]
    if scheme == "memory" or (scheme == "sqlite" and database_path(store_url) == ":memory:"):
        yield InMemorySaver()  # a second connection to an in-memory SQLite would be another database
    elif scheme == "sqlite":
        async with _sqlite_saver(store_url) as saver:
            yield saver
    elif scheme in ("postgresql", "postgres"):
        async with _postgres_saver(store_url) as saver:
            yield saver
    else:
        raise ConfigurationError(f"no LangGraph saver for the store {store_url!r}")


@asynccontextmanager
async def _sqlite_saver(store_url: str) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    try:
        import aiosqlite
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    except ImportError as exc:
        raise _missing("langgraph-checkpoint-sqlite", "langgraph") from exc
    path = database_path(store_url)
    async with aiosqlite.connect(path, timeout=busy_timeout_ms(store_url) / 1000) as conn:
        saver = AsyncSqliteSaver(conn)
        await saver.setup()
        yield saver


@asynccontextmanager
async def _postgres_saver(store_url: str) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    try:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool
    except ImportError as exc:
        raise _missing("langgraph-checkpoint-postgres", "langgraph-postgres") from exc
    # What AsyncPostgresSaver needs of its connections: autocommit, dict rows, no prepared statements.
    kwargs = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    async with AsyncConnectionPool(store_url, max_size=POOL_SIZE, kwargs=kwargs, open=False) as pool:
        saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]  # a pool of dict-row connections
        await saver.setup()
        yield saver


def _missing(package: str, extra: str) -> ImportError:
    hint = f"pip install 'runyard[{extra}]'"
    return ImportError(f"a durable LangGraph graph on this store needs {package}: {hint}", name=package)
