"""What the HTTP tests share: the error envelope, waiting for runs, reading SSE."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

FINISHED = frozenset({"succeeded", "failed", "cancelled", "timed_out"})
SNAPSHOT_FIELDS = {
    "run_id",
    "session_id",
    "pipeline",
    "status",
    "input",
    "output",
    "error",
    "created_at",
    "started_at",
    "finished_at",
    "last_seq",
    "attempt",
    "metadata",
    "waiting_for",
    "scheduled_for",  # issue 13: after_s
    "trace_id",  # issue 18: its OpenTelemetry trace
}
RFC3339_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")


def assert_error(response: httpx.Response, status: int, code: str | set[str]) -> dict[str, Any]:
    """``response`` is the contract's error envelope with this status and code."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    codes = {code} if isinstance(code, str) else code
    assert body["error"]["code"] in codes, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return body


def parse_time(value: str) -> datetime:
    """An RFC 3339 UTC time as the contract writes it (``...Z``)."""
    assert RFC3339_UTC.fullmatch(value), value
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.utcoffset() == UTC.utcoffset(None)
    return parsed


def create_run(client: httpx.Client, pipeline: str, input: Any, **fields: Any) -> dict[str, Any]:
    response = client.post("/v1/runs", json={"pipeline": pipeline, "input": input, **fields})
    assert response.status_code == 201, response.text
    snapshot: dict[str, Any] = response.json()
    return snapshot


def ticker(client: httpx.Client, count: int = 5, **input: Any) -> dict[str, Any]:
    """Start a ``ticker`` run of ``count`` ticks (marker ``m``)."""
    return create_run(client, "ticker", {"marker": "m", "count": count, **input})


def nap(client: httpx.Client, seconds: float = 5.0, **fields: Any) -> dict[str, Any]:
    """Start a ``nap`` run (``marker`` goes into its input, other fields into the request)."""
    return create_run(client, "nap", {"seconds": seconds, "marker": fields.pop("marker", "")}, **fields)


def snapshot(client: httpx.Client, run_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/runs/{run_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for_status(
    client: httpx.Client, run_id: str, statuses: set[str] | frozenset[str], timeout: float = 10.0
) -> dict[str, Any]:
    """Poll the run's snapshot until its status is one of ``statuses``."""
    deadline = time.monotonic() + timeout
    while True:
        current = snapshot(client, run_id)
        if current["status"] in statuses:
            return current
        assert time.monotonic() < deadline, f"run {run_id} still {current['status']}, wanted {statuses}"
        time.sleep(0.02)


def wait_finished(client: httpx.Client, run_id: str, timeout: float = 10.0) -> dict[str, Any]:
    return wait_for_status(client, run_id, FINISHED, timeout)


def wait_for_event(client: httpx.Client, run_id: str, type: str, timeout: float = 10.0) -> dict[str, Any]:
    """Poll the run's events until one of ``type`` exists; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        for event in all_events(client, run_id):
            if event["type"] == type:
                return event
        assert time.monotonic() < deadline, f"run {run_id} has no {type} event"
        time.sleep(0.02)


def all_events(client: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/runs/{run_id}/events")
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def assert_well_formed_log(events: list[dict[str, Any]]) -> None:
    """``seq`` 1..n without gaps, RFC 3339 times, and exactly one ``end``, last."""
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    for event in events:
        assert set(event) == {"seq", "type", "data", "ts"}, event
        parse_time(event["ts"])
    assert [event["type"] for event in events].count("end") == 1, [e["type"] for e in events]
    assert events[-1]["type"] == "end"


def list_runs(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/v1/runs", params=params)
    assert response.status_code == 200, response.text
    runs: list[dict[str, Any]] = response.json()["runs"]
    return runs


def assert_nothing_created(client: httpx.Client) -> None:
    """The client's owner has no run, and the server still answers."""
    assert list_runs(client) == []
    assert client.get("/healthz").status_code == 200


# -- SSE -----------------------------------------------------------------------


@dataclass
class Block:
    """One SSE block: the bytes up to and including its blank line."""

    raw: bytes
    fields: dict[str, str] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)

    @property
    def is_event(self) -> bool:
        return "data" in self.fields

    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.fields["data"])
        return parsed


def _block(raw: bytes) -> Block:
    block = Block(raw)
    for line in raw.decode().split("\n"):
        if not line:
            continue
        if line.startswith(":"):
            block.comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        assert name not in block.fields, f"field {name} twice in {raw!r}"
        block.fields[name] = value[1:] if value.startswith(" ") else value
    return block


def sse_blocks(response: httpx.Response) -> Iterator[Block]:
    """The stream's blocks in order, as they arrive."""
    buffer = b""
    for chunk in response.iter_bytes():
        buffer += chunk
        while b"\n\n" in buffer:
            raw, buffer = buffer.split(b"\n\n", 1)
            yield _block(raw + b"\n\n")
    assert buffer == b"", f"stream ended inside a block: {buffer[:200]!r}"


def sse_events(response: httpx.Response) -> Iterator[Block]:
    """Only the blocks that carry an event (no heartbeats)."""
    return (block for block in sse_blocks(response) if block.is_event)


def assert_frame_matches_event(block: Block) -> dict[str, Any]:
    """``id`` is the seq, ``event`` the type, ``data`` the whole event."""
    event = block.event()
    assert block.fields["id"] == str(event["seq"])
    assert block.fields["event"] == event["type"]
    assert set(event) == {"seq", "type", "data", "ts"}
    return event


# -- raw HTTP ------------------------------------------------------------------


def raw_request(base_url: str, request_line: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """Send a request line as is (no client-side normalisation of ``..``); status and body."""
    host, port = base_url.removeprefix("http://").split(":")
    lines = [request_line, f"Host: {host}", "Connection: close", "Content-Length: 0"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    return status, body


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out
