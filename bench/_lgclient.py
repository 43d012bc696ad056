"""The load client of ``langgraph_server.py``: one process (or one shard of several)
that runs its share of the runs through the real ``langgraph_sdk`` client and
checks every event.

Started as ``python _lgclient.py '<config JSON>'``; prints JSON lines on stdout:
``{"event": "ready"}`` once set up (LangGraph threads created), then waits for a
``GO`` line on stdin so that every shard starts at once, and finally
``{"event": "result", ...}``.

Two protocols, one client library:

- ``langgraph`` (LangGraph's server, or runyard's ``/langgraph``): a thread per
  run, then ``client.runs.stream(thread, assistant, stream_mode="custom",
  stream_resumable=True, on_disconnect="continue")``; a rejoin is
  ``client.runs.join_stream(thread, run, last_event_id=...)``;
- ``v1`` (runyard's own API, which has no SDK of its own): ``POST /v1/runs`` and
  ``GET /v1/runs/{id}/stream`` through the same SDK's ``client.http``, so the
  same httpx client and SSE decoder read every stream; a rejoin sends
  ``Last-Event-ID``.

With ``sequential``, the runs go one after another instead of all at once (the
time to first event of a run alone). A run in ``rejoin`` drops its stream after half its events (the connection is
closed) and rejoins from the last event id it saw. Every event's ``i`` is
counted: a second sighting is a duplicate, one never seen a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.schema import StreamPart

TICK = "tick"


@dataclass
class Run:
    """One run's stream as the client saw it."""

    idx: int
    marker: str
    count: int
    rejoin: bool
    seen: bytearray = field(init=False)
    events: int = 0
    dups: int = 0
    foreign: int = 0  # events of another run, or not ticks at all
    last_id: str | None = None
    ttfe_s: float | None = None
    rejoined: bool = False
    error: str | None = None

    def __post_init__(self) -> None:
        self.seen = bytearray(self.count)

    def take(self, data: Any, started: float) -> None:
        """Counts one tick (``data`` is its payload): duplicate, foreign or new."""
        if self.ttfe_s is None:
            self.ttfe_s = time.perf_counter() - started
        i = data.get("i") if isinstance(data, dict) else None
        if not isinstance(i, int) or not 0 <= i < self.count or data.get("marker") != self.marker:
            self.foreign += 1
        elif self.seen[i]:
            self.dups += 1
        else:
            self.seen[i] = 1
        self.events += 1

    def gaps(self) -> int:
        return self.count - sum(self.seen)


def sdk(url: str, streams: int) -> LangGraphClient:
    """The SDK's client, as ``get_client(url=...)`` builds it, with a connection
    pool as large as the streams (httpx caps a pool at 100 connections)."""
    limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=streams + 10)
    transport = httpx.AsyncHTTPTransport(retries=5, limits=limits)
    timeout = httpx.Timeout(connect=10, read=300, write=300, pool=30)
    return LangGraphClient(httpx.AsyncClient(base_url=url, transport=transport, timeout=timeout))


async def read(parts: AsyncIterator[StreamPart], run: Run, kind: str, started: float, stop_at: int | None) -> Any:
    """Reads ``parts`` (events of type ``kind`` are the run's ticks) to their end, or
    closes the stream once ``stop_at`` events came. Returns the run id if a
    ``metadata`` part named it. A LangGraph part's data is the tick itself, a /v1
    event's is the envelope ``{seq, type, data, ts}``."""
    run_id = None
    async with contextlib.aclosing(parts):  # type: ignore[type-var]
        async for part in parts:
            if part.event == kind:
                run.take(part.data if kind != TICK else part.data.get("data"), started)
                if part.id is not None:
                    run.last_id = part.id
                if stop_at is not None and run.events >= stop_at:
                    break
            elif part.event == "metadata" and isinstance(part.data, dict):
                run_id = part.data.get("run_id")
            elif part.event == "error":
                run.error = f"error part: {str(part.data)[:200]}"
    return run_id


class LangGraphLoad:
    """Runs through the LangGraph protocol (threads, runs.stream, join_stream)."""

    def __init__(self, client: LangGraphClient, assistant: str) -> None:
        self.client, self.assistant = client, assistant
        self.threads: dict[int, str] = {}

    async def prepare(self, run: Run) -> None:
        thread = await self.client.threads.create(headers=owner(run))
        self.threads[run.idx] = thread["thread_id"]

    async def drive(self, run: Run) -> None:
        thread_id, started = self.threads[run.idx], time.perf_counter()
        parts = self.client.runs.stream(
            thread_id,
            self.assistant,
            input={"marker": run.marker, "count": run.count},
            stream_mode="custom",
            stream_resumable=True,
            on_disconnect="continue",
            headers=owner(run),
        )
        run_id = await read(parts, run, "custom", started, run.count // 2 if run.rejoin else None)
        if run.rejoin:
            if run_id is None or run.last_id is None:
                raise RuntimeError("no run id or event id to rejoin from")
            run.rejoined = True
            joined = self.client.runs.join_stream(
                thread_id, run_id, stream_mode="custom", last_event_id=run.last_id, headers=owner(run)
            )
            await read(joined, run, "custom", started, None)


class V1Load:
    """Runs through runyard's own API: ``POST /v1/runs/stream`` creates a run and
    streams it in one request, as ``runs.stream`` does (a stream opened after a
    separate ``POST /v1/runs`` reads history in bulk once it starts late, a
    cheaper and slower load than the LangGraph one); a rejoin is
    ``GET /v1/runs/{id}/stream`` with ``Last-Event-ID``."""

    def __init__(self, client: LangGraphClient, assistant: str) -> None:
        self.client, self.pipeline = client, assistant

    async def prepare(self, run: Run) -> None:
        return None

    async def drive(self, run: Run) -> None:
        started = time.perf_counter()
        body = {"pipeline": self.pipeline, "input": {"marker": run.marker, "count": run.count}}
        located: list[str] = []  # the run's URL, from the response's Location
        parts = self.client.http.stream(
            "/v1/runs/stream",
            "POST",
            json=body,
            headers=owner(run),
            on_response=lambda response: located.append(response.headers.get("location", "")),
        )
        await read(parts, run, TICK, started, run.count // 2 if run.rejoin else None)
        if run.rejoin:
            if run.last_id is None or not located:
                raise RuntimeError("no run or event id to rejoin from")
            run.rejoined = True
            path = f"{located[0]}/stream"
            rejoin = self.client.http.stream(path, "GET", headers={**owner(run), "Last-Event-ID": run.last_id})
            await read(rejoin, run, TICK, started, None)


def owner(run: Run) -> dict[str, str]:
    """An owner per run, as bench/streams.py does: runyard's per-owner caps stay out
    of the way (LangGraph's server ignores the header)."""
    return {"X-Client-Id": f"load-{run.idx}"}


async def guarded(coro: Any, run: Run) -> None:
    try:
        await coro
    except Exception as e:  # a failed run is reported with its counts, not fatal
        run.error = run.error or f"{type(e).__name__}: {str(e)[:300]}"


async def warm_up(load: LangGraphLoad | V1Load) -> None:
    """One short run before the load, not counted: a fresh server's first run pays
    for imports and caches (LangGraph's and runyard's alike) that no later run does."""
    run = Run(-1, f"warmup-{uuid.uuid4().hex[:8]}", 10, False)
    await load.prepare(run)
    await load.drive(run)
    if run.error or run.gaps():
        raise RuntimeError(f"the warm-up run failed: {run.error or f'{run.gaps()} gaps'}")


async def main_async(cfg: dict[str, Any]) -> dict[str, Any]:
    runs = [Run(i, f"m{i}-{uuid.uuid4().hex[:8]}", cfg["count"], i in set(cfg["rejoin"])) for i in cfg["indexes"]]
    client = sdk(cfg["url"], len(runs))
    load = (LangGraphLoad if cfg["protocol"] == "langgraph" else V1Load)(client, cfg["assistant"])
    await asyncio.gather(*(guarded(load.prepare(run), run) for run in runs))
    if cfg.get("warmup"):
        await warm_up(load)
    # The load gets a pool of its own: a connection left idle by the setup could be closed by the
    # server's keep-alive timeout just as the load reuses it (an httpx ReadError, not the server's fault).
    await client.http.client.aclose()
    client = load.client = sdk(cfg["url"], len(runs))
    print(json.dumps({"event": "ready"}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # the driver's GO
    cpu0, t_start = time.process_time(), time.time()
    ready = [run for run in runs if run.error is None]
    if cfg.get("sequential"):  # the TTFE probe: one run at a time on an idle server
        for run in ready:
            await guarded(load.drive(run), run)
    else:
        await asyncio.gather(*(guarded(load.drive(run), run) for run in ready))
    t_end = time.time()
    with contextlib.suppress(Exception):
        await client.http.client.aclose()
    rejoined = [run for run in runs if run.rejoined]
    return {
        "event": "result",
        "t_start": t_start,
        "t_end": t_end,
        "client_cpu_s": time.process_time() - cpu0,
        "runs": len(runs),
        "events": sum(run.events for run in runs),
        "complete": sum(1 for run in runs if run.error is None and run.gaps() == 0),
        "ttfe_ms": [round(run.ttfe_s * 1000, 3) for run in runs if run.ttfe_s is not None],
        "rejoins": len(rejoined),
        "rejoin_dups": sum(run.dups for run in rejoined),
        "rejoin_gaps": sum(run.gaps() for run in rejoined),
        "dups": sum(run.dups for run in runs),
        "gaps": sum(run.gaps() for run in runs),
        "foreign": sum(run.foreign for run in runs),
        "errors": [f"run {run.idx}: {run.error}" for run in runs if run.error][:5],
        "error_count": sum(1 for run in runs if run.error),
    }


def main() -> None:
    cfg = json.loads(sys.argv[1])
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        result = asyncio.run(asyncio.wait_for(main_async(cfg), cfg["deadline_s"]))
    except TimeoutError:
        result = {"event": "result", "timeout": True, "errors": [f"deadline {cfg['deadline_s']} s passed"]}
    print(json.dumps(result), flush=True)
    os._exit(0)  # no lingering connection delays the exit


if __name__ == "__main__":
    main()
