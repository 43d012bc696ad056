"""A deliberately independent SSE reader for tests (the client under test has its own)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx


async def frames(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Parsed frames: ``{"id", "event", "data"}`` for events, ``{"comment"}`` for comments."""
    buffer = b""
    async for chunk in response.aiter_raw():
        buffer += chunk
        while b"\n\n" in buffer:
            raw, buffer = buffer.split(b"\n\n", 1)
            frame: dict[str, Any] = {}
            for line in raw.decode().split("\n"):
                if line.startswith(":"):
                    frame.setdefault("comments", []).append(line[1:].strip())
                elif line.startswith("id: "):
                    frame["id"] = int(line[4:])
                elif line.startswith("event: "):
                    frame["event"] = line[7:]
                elif line.startswith("data: "):
                    frame["data"] = json.loads(line[6:])
            yield frame


async def read_events(
    client: httpx.AsyncClient,
    run_id: str,
    *,
    after: int | None = None,
    last_event_id: int | None = None,
    stop_after: int | None = None,
    headers: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Every event a stream of ``run_id`` delivers until ``end`` (or ``stop_after`` events)."""
    params = {"after": str(after)} if after is not None else {}
    all_headers = dict(headers or {})
    if last_event_id is not None:
        all_headers["Last-Event-ID"] = str(last_event_id)
    events: list[dict[str, Any]] = []
    async with client.stream("GET", f"/v1/runs/{run_id}/stream", params=params, headers=all_headers) as response:
        assert response.status_code == 200, await response.aread()
        async for frame in frames(response):
            if "id" not in frame:
                continue
            assert frame["data"]["seq"] == frame["id"] and frame["data"]["type"] == frame["event"]
            events.append(frame["data"])
            if frame["event"] == "end" or (stop_after is not None and len(events) >= stop_after):
                break
    return events


def assert_gap_free(events: list[dict[str, Any]], first: int = 1) -> None:
    seqs = [event["seq"] for event in events]
    assert seqs == list(range(first, first + len(seqs))), f"gap or duplicate in {seqs[:20]}..."
