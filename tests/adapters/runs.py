"""Running a pipeline to its end in a real runtime, and reading what it emitted."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import orjson

from runyard import Run, RunStatus
from runyard.runtime import Runtime

OWNER = "tester"


@dataclass
class Finished:
    """A finished run and its events, as ``(type, data)`` in order."""

    run: Run
    events: list[tuple[str, Any]]

    def of_type(self, type: str) -> list[Any]:
        return [data for kind, data in self.events if kind == type]

    def types(self) -> list[str]:
        return [kind for kind, _ in self.events]

    def text(self) -> str:
        """What the run streamed as ``token`` events, joined."""
        return "".join(data["text"] for data in self.of_type("token"))


async def run_to_end(rt: Runtime, pipeline: str, input: Any, *, session_id: str | None = None) -> Finished:
    """Create a run, wait for its end, and read back every event it has."""
    return await finish(rt, await rt.create_run(OWNER, pipeline, input, session_id=session_id))


async def until_waiting(rt: Runtime, run: Run, timeout_s: float = 20) -> Run:
    """The run once it waits (for an answer or a time), following its events as they come."""
    async with asyncio.timeout(timeout_s), contextlib.aclosing(rt.follow(run, 0)) as frames:
        async for _ in frames:  # each batch of events may be the one that made it wait
            current = await rt.get_run(run.owner, run.run_id)
            if current.status is RunStatus.WAITING:
                return current
            assert not current.status.finished, f"run {run.run_id} ended {current.status} instead of waiting"
    raise AssertionError(f"run {run.run_id} stopped streaming without waiting")


async def finish(rt: Runtime, run: Run) -> Finished:
    """Wait for an existing run's end and read back every event it has."""
    done = await rt.wait(await rt.get_run(run.owner, run.run_id), 20)
    assert done is not None, f"run {run.run_id} did not finish"
    events = await rt.store.read_events(run.run_id, 0, 10_000)
    return Finished(done, [(event.type, orjson.loads(event.data)) for event in events])
