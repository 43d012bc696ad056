"""A LangGraph graph's work survives what kills executions: ``kill -9`` of the
worker in the middle of a node, and a full restart while the graph waits at an
``interrupt()``. One ``runyard`` process on a SQLite file (LangGraph's saver
on the same file), killed and started again; each node's call is counted by a
fake API on loopback, so a call made by a process that died is counted too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.durable.test_survival import api, calls, events, until, until_status
from tests.fake_api import FakeAPI
from tests.support import ServerProcess

pytest.importorskip("langgraph.checkpoint.sqlite")  # LangGraph's SQLite saver: a package of its own

__all__ = ["api"]  # a fixture, used by name


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    env = {"RUNYARD_STORE": f"sqlite:///{tmp_path}/graph.db", "RUNYARD_LEASE_S": "2"}
    process = ServerProcess(env, app="tests.adapters.graph_app:app", output=tmp_path / "server.log")
    try:
        yield process.start()
    finally:
        process.stop()


def start_work(server: ServerProcess, url: str, delay: float, ask: bool) -> str:
    body = {"pipeline": "work", "input": {"api": url, "delay": delay, "ask": ask, "done": []}}
    response = httpx.post(f"{server.url}/v1/runs", json=body, timeout=5)
    assert response.status_code == 201, response.text
    run_id: str = response.json()["run_id"]
    return run_id


def test_kill_9_in_the_middle_of_a_node_runs_the_nodes_before_it_once(
    server: ServerProcess, api: tuple[FakeAPI, str]
) -> None:
    fake, url = api
    run_id = start_work(server, url, delay=1.5, ask=False)
    until(lambda: calls(fake)["second"] == 1, what="the second node to be called")
    server.kill()
    server.start()
    done = until_status(server, run_id, {"succeeded", "failed"}, timeout_s=60)

    assert done["status"] == "succeeded", done
    assert done["output"] == {"done": ["first", "second", "third"], "approved": "auto"}
    assert calls(fake) == {"first": 1, "second": 2, "third": 1}
    log = [(e["type"], e["data"]) for e in events(server, run_id) if e["type"] in ("graph.update", "step")]
    assert [data.get("node") or data["status"] for _, data in log] == [
        "started",
        "first",  # checkpointed before "second" began: kept, and not run again
        "restarted",  # the invocation cut off by the kill
        "started",
        "second",
        "review",
        "third",
        "done",
    ]


def test_a_graph_waiting_at_an_interrupt_is_answered_after_a_restart(
    server: ServerProcess, api: tuple[FakeAPI, str]
) -> None:
    fake, url = api
    run_id = start_work(server, url, delay=0.0, ask=True)
    asked = until_status(server, run_id, {"waiting"})
    assert asked["waiting_for"]["request"] == {"approve": ["first", "second"]}
    server.stop()
    server.start()
    answer = {"value": "yes", "ask_id": asked["waiting_for"]["ask_id"]}
    response = httpx.post(f"{server.url}/v1/runs/{run_id}/input", json=answer, timeout=5)
    assert response.status_code == 202, response.text
    done = until_status(server, run_id, {"succeeded", "failed"})

    assert done["status"] == "succeeded", done
    assert done["output"] == {"done": ["first", "second", "third"], "approved": "yes"}
    assert calls(fake) == {"first": 1, "second": 1, "third": 1}
