"""``runyard.client`` against a real uvicorn server.

The server here is a small fake that speaks the contract (``FakeServer``): it
lets a test drop a stream after k events, close it early, rewind it, or restart
the whole server, which the real runtime cannot be asked to do on cue.
``tests/test_cli.py`` uses it too.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import typing
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

import runyard
from runyard.client import (
    APIError,
    AsyncClient,
    Client,
    Cron,
    EventPage,
    Item,
    Reconnect,
    RunPage,
    RunSnapshot,
    StreamLost,
    api_error,
)
from runyard.client.clients import IDLE_EXPIRY_S
from runyard.errors import RunyardError
from runyard.events.sse import SSEFrame, SSEParser, decode_event

FAST = Reconnect(initial_delay_s=0.01, max_delay_s=0.2)

# -- a fake server speaking the contract ------------------------------------------


class Fail(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


@dataclass
class Fault:
    """What the next stream connection does: drop (``abort``) or end cleanly (``close``)
    after sending ``after`` events, or first re-send ``after`` events the client has."""

    kind: Literal["abort", "close", "rewind"]
    after: int


def _ts() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class FakeRun:
    """A run whose events come due one per ``interval_s``, so it lives through restarts."""

    run_id: str
    session_id: str
    owner: str
    pipeline: str
    input: Any
    script: list[tuple[str, Any]]
    interval_s: float
    started: float = field(default_factory=time.monotonic)
    created_at: str = field(default_factory=_ts)
    log: list[dict[str, Any]] = field(default_factory=list)
    status: str = "queued"
    output: Any = None
    error: Any = None
    asked: dict[str, Any] | None = None  # the last input.requested
    answers: list[Any] = field(default_factory=list)

    def advance(self) -> None:
        elapsed = time.monotonic() - self.started
        due = len(self.script) if self.interval_s <= 0 else int(elapsed / self.interval_s) + 1
        # a waiting run stays where it is until answered, as the real runtime's does
        while len(self.log) < min(due, len(self.script)) and self.status != "waiting":
            self._append(*self.script[len(self.log)])

    def _append(self, kind: str, data: Any) -> None:
        self.log.append({"seq": len(self.log) + 1, "type": kind, "data": data, "ts": _ts()})
        if kind == "status":
            self.status = data["status"]
        if kind == "input.requested":
            self.asked = data
        if kind == "end":
            self.output, self.error = data.get("output"), data.get("error")

    def answer(self, value: Any, ask_id: str | None) -> None:
        """``POST .../input``: refused as the contract says, else the run goes on with ``value``."""
        self.advance()
        if self.status != "waiting" or self.asked is None:
            raise Fail(409, "run_not_waiting", f"run {self.run_id} is not waiting for input")
        if ask_id is not None and ask_id != self.asked["ask_id"]:
            raise Fail(409, "ask_mismatch", f"run {self.run_id} waits for {self.asked['ask_id']}, not {ask_id}")
        problem = _misfit(value, self.asked.get("schema"))
        if problem:
            raise Fail(422, "invalid_input", f"the answer does not fit the schema: {problem}")
        self.answers.append(value)
        end = ("end", {"status": "succeeded", "output": {"answers": self.answers}})
        goes_on = [("input.received", {"ask_id": self.asked["ask_id"]}), ("status", {"status": "queued"})]
        self.script = [*self.script[: len(self.log)], *goes_on, *self.script[len(self.log) : -1], end]
        self.asked, self.status = None, "queued"

    def cancel(self) -> None:
        self.advance()
        error = {"code": "cancelled", "message": "the run was cancelled"}
        self.script = self.script[: len(self.log)]
        for step in (("status", {"status": "cancelled"}), ("end", {"status": "cancelled", "error": error})):
            self.script.append(step)
            self._append(*step)

    @property
    def finished(self) -> bool:
        return bool(self.log) and self.log[-1]["type"] == "end"

    def snapshot(self, advance: bool = True) -> dict[str, Any]:
        if advance:
            self.advance()
        return {
            "run_id": self.run_id,
            "session_id": self.session_id,
            "pipeline": self.pipeline,
            "status": self.status,
            "input": self.input,
            "output": self.output,
            "error": self.error,
            "created_at": self.created_at,
            "started_at": None,
            "finished_at": None,
            "last_seq": len(self.log),
            "attempt": 1,
            "metadata": {},
            "waiting_for": self.asked if self.status == "waiting" else None,
        }


def _misfit(value: Any, schema: Any) -> str | None:
    """What little JSON Schema the fake checks: a top-level type, required keys, property types."""
    types = {"object": dict, "string": str, "boolean": bool, "integer": int, "number": (int, float), "array": list}
    if not isinstance(schema, dict) or schema.get("type") not in types:
        return None
    if not isinstance(value, types[schema["type"]]):
        return f"expected {schema['type']}"
    if schema["type"] != "object":
        return None
    missing = [key for key in schema.get("required", []) if key not in value]
    if missing:
        return f"{missing[0]}: required"
    for key, spec in schema.get("properties", {}).items():
        if key in value and _misfit(value[key], spec):
            return f"{key}: expected {spec['type']}"
    return None


def ticker_script(count: int, fail_at: int | None = None) -> list[tuple[str, Any]]:
    ticks = [("tick", {"i": i}) for i in range(count if fail_at is None else fail_at)]
    if fail_at is None:
        end = [("status", {"status": "succeeded"}), ("end", {"status": "succeeded", "output": {"count": count}})]
    else:
        error = {"code": "pipeline_error", "message": f"failed at tick {fail_at}"}
        end = [("error", error), ("status", {"status": "failed"}), ("end", {"status": "failed", "error": error})]
    return [("status", {"status": "running"}), *ticks, *end]


def custom_script(spec: dict[str, Any]) -> list[tuple[str, Any]]:
    """Pipeline ``script``: ``{"events": [[type, data]...], "status", "output", "error"}``."""
    status = spec.get("status", "succeeded")
    if status == "succeeded":
        end = {"status": status, "output": spec.get("output")}
    else:
        end = {"status": status, "error": spec.get("error") or {"code": status, "message": f"run {status}"}}
    events = [(kind, data) for kind, data in spec.get("events", [])]
    return [("status", {"status": "running"}), *events, ("status", {"status": status}), ("end", end)]


def asker_script(asks: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """Pipeline ``asker``: ``{"asks": [{"request", "schema"?}...]}``; each ask waits for an answer,
    and the output is every answer, in order."""
    waits: list[tuple[str, Any]] = []
    for n, ask in enumerate(asks, start=1):
        asked = {"ask_id": f"ask_{n}", "request": ask.get("request"), "schema": ask.get("schema")}
        waits += [("input.requested", asked), ("status", {"status": "waiting"}), ("status", {"status": "running"})]
    end = ("end", {"status": "succeeded", "output": {"answers": []}})
    return [("status", {"status": "running"}), *waits, ("status", {"status": "succeeded"}), end]


def make_script(pipeline: str, data: Any) -> tuple[list[tuple[str, Any]], float]:
    if pipeline == "quota":
        raise Fail(429, "quota_exceeded", "5 runs is the quota", {"Retry-After": "7"})
    if pipeline not in ("ticker", "script", "asker"):
        raise Fail(404, "pipeline_not_found", f"no pipeline named {pipeline!r}")
    if not isinstance(data, dict) or (pipeline == "ticker" and not isinstance(data.get("count"), int)):
        raise Fail(422, "invalid_request", f"input does not fit pipeline {pipeline!r}: count: required")
    interval = data.get("interval_ms", 0) / 1000
    if pipeline == "ticker":
        return ticker_script(data["count"], data.get("fail_at")), interval
    if pipeline == "asker":
        return asker_script(data.get("asks", [])), interval
    return custom_script(data), interval


@dataclass
class FakeState:
    runs: dict[str, FakeRun] = field(default_factory=dict)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    connections: list[int] = field(default_factory=list)  # the cursor each stream connection asked for
    cancels: list[str] = field(default_factory=list)
    answers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (run_id, body) accepted
    headers: list[dict[str, str]] = field(default_factory=list)
    heartbeat_s: float = 0.05

    def owner(self, request: Request) -> str:
        self.headers.append(dict(request.headers))
        return request.headers.get("x-client-id", "anonymous")

    def run(self, request: Request) -> FakeRun:
        run = self.runs.get(request.path_params["run_id"])
        if run is None or run.owner != self.owner(request):
            raise Fail(404, "run_not_found", "no such run")
        return run


def _cursor(value: str | None) -> int:
    if value is None:
        return 0
    if not value.isdigit():
        raise Fail(400, "invalid_cursor", f"cursor {value!r} is not a non-negative integer")
    return int(value)


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise Fail(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Fail(422, "invalid_request", "the body must be an object")
    return body


def _frame(event: dict[str, Any]) -> bytes:
    return f"id: {event['seq']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


async def _frames(state: FakeState, run: FakeRun, cursor: int, fault: Fault | None) -> AsyncIterator[bytes]:
    if fault and fault.kind == "rewind":
        cursor = max(0, cursor - fault.after)
    sent, quiet_since = 0, time.monotonic()
    while True:
        run.advance()
        for event in run.log[cursor:]:
            if fault and fault.kind != "rewind" and sent == fault.after:
                if fault.kind == "abort":
                    raise ConnectionAbortedError("a drop injected by the test")
                return
            yield _frame(event)
            sent, cursor, quiet_since = sent + 1, event["seq"], time.monotonic()
            if event["type"] == "end":
                return
        if run.finished and cursor >= len(run.log):  # nothing after the cursor, ever
            return
        if time.monotonic() - quiet_since > state.heartbeat_s:
            yield b": ping\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(0.002)


def build_fake_app(state: FakeState) -> Starlette:
    async def create(request: Request) -> Response:
        owner, body = state.owner(request), await _body(request)
        if "pipeline" not in body or "input" not in body:
            raise Fail(422, "invalid_request", "pipeline and input are required")
        if body["pipeline"] == "crash":
            return PlainTextResponse("upstream exploded", status_code=502)
        script, interval = make_script(body["pipeline"], body["input"])
        session_id = body.get("session_id") or f"ses_{len(state.sessions) + 1}"
        if body.get("session_id") and session_id not in state.sessions:
            raise Fail(404, "session_not_found", "no such session")
        state.sessions.setdefault(session_id, {"session_id": session_id, "metadata": {}, "history": []})
        run_id = f"run_{len(state.runs) + 1}"
        run = FakeRun(run_id, session_id, owner, body["pipeline"], body["input"], script, interval)
        state.runs[run_id] = run
        return JSONResponse(run.snapshot(), 201, headers={"Location": f"/v1/runs/{run_id}"})

    async def snapshot(request: Request) -> Response:
        return JSONResponse(state.run(request).snapshot())

    async def events(request: Request) -> Response:
        run = state.run(request)
        after = _cursor(request.query_params.get("after"))
        limit = int(request.query_params.get("limit", 100))
        page = run.snapshot() and run.log[after : after + limit]
        next_after = page[-1]["seq"] if page else after
        return JSONResponse({"events": page, "next_after": next_after, "status": run.status})

    async def stream(request: Request) -> Response:
        run = state.run(request)
        cursor = _cursor(request.headers.get("last-event-id") or request.query_params.get("after"))
        state.connections.append(cursor)
        fault = state.faults.pop(0) if state.faults else None
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        frames = _frames(state, run, cursor, fault)
        return StreamingResponse(frames, media_type="text/event-stream", headers=headers)

    async def cancel(request: Request) -> Response:
        run = state.run(request)
        run.advance()
        if run.finished:
            raise Fail(409, "run_finished", f"run {run.run_id} has finished")
        run.cancel()
        state.cancels.append(run.run_id)
        return JSONResponse(run.snapshot(), 202)

    async def answer(request: Request) -> Response:
        run, body = state.run(request), await _body(request)
        if "value" not in body:
            raise Fail(422, "invalid_request", "value is required")
        run.answer(body["value"], body.get("ask_id"))
        state.answers.append((run.run_id, body))
        return JSONResponse(run.snapshot(advance=False), 202)  # as answered: queued

    async def list_runs(request: Request) -> Response:
        owner, query = state.owner(request), request.query_params
        runs = [r.snapshot() for r in reversed(state.runs.values()) if r.owner == owner]
        runs = [r for r in runs if query.get("session_id") in (None, r["session_id"])]
        runs = [r for r in runs if query.get("status") in (None, r["status"])]
        return JSONResponse({"runs": runs[: int(query.get("limit", 50))], "next": None})

    async def create_session(request: Request) -> Response:
        body = await _body(request)
        session_id = f"ses_{len(state.sessions) + 1}"
        session = {"session_id": session_id, "metadata": body.get("metadata", {}), "history": []}
        state.sessions[session_id] = session
        return JSONResponse(session, 201)

    async def session(request: Request) -> Response:
        session_id = request.path_params["session_id"]
        if session_id not in state.sessions:
            raise Fail(404, "session_not_found", "no such session")
        if request.method == "DELETE":
            del state.sessions[session_id]
            return Response(status_code=204)
        return JSONResponse(state.sessions[session_id])

    async def pipelines(request: Request) -> Response:
        names = ["ticker", "script"]
        return JSONResponse({"pipelines": [{"name": name, "input_schema": {}} for name in names]})

    async def fail(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
            exc = Fail(exc.status_code, code, str(exc.detail))
        assert isinstance(exc, Fail)
        envelope = {"error": {"code": exc.code, "message": exc.message}}
        return JSONResponse(envelope, exc.status, headers=exc.headers)

    routes = [
        Route("/v1/runs", create, methods=["POST"]),
        Route("/v1/runs", list_runs, methods=["GET"]),
        Route("/v1/runs/{run_id}", snapshot),
        Route("/v1/runs/{run_id}/events", events),
        Route("/v1/runs/{run_id}/stream", stream),
        Route("/v1/runs/{run_id}/cancel", cancel, methods=["POST"]),
        Route("/v1/runs/{run_id}/input", answer, methods=["POST"]),
        Route("/v1/sessions", create_session, methods=["POST"]),
        Route("/v1/sessions/{session_id}", session, methods=["GET", "DELETE"]),
        Route("/v1/pipelines", pipelines),
    ]
    return Starlette(routes=routes, exception_handlers={Fail: fail, HTTPException: fail})


class FakeServer:
    """The fake app on uvicorn, in a thread, on a fixed loopback port it can restart on."""

    def __init__(self) -> None:
        self.state = FakeState()
        self._socket = self._bind(0)
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def _bind(port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        return sock

    def start(self) -> None:
        sock = self._socket if self._socket.fileno() != -1 else self._bind(self.port)
        config = uvicorn.Config(
            build_fake_app(self.state), log_level="critical", lifespan="off", timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "the fake server did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = self._server.force_exit = True
        self._thread.join(10)
        self._socket.close()

    def restart(self, pause_s: float = 0.2) -> None:
        self.stop()
        time.sleep(pause_s)
        self.start()


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    server.start()
    yield server
    server.stop()


async def collect(client: AsyncClient, run_id: str, after: int = 0) -> list[dict[str, Any]]:
    return [event async for event in client.stream(run_id, after=after)]


def assert_complete(events: list[dict[str, Any]], first: int = 1) -> None:
    """Every seq once, in order, with no gap, ending with ``end``."""
    assert [e["seq"] for e in events] == list(range(first, first + len(events)))
    assert events[-1]["type"] == "end"
    assert [e["type"] for e in events].count("end") == 1


# -- the SSE parser ----------------------------------------------------------------


def parse(text: str) -> list[SSEFrame]:
    parser = SSEParser()
    frames = [parser.feed(line) for line in text.split("\n")]
    return [frame for frame in frames if frame is not None]


def test_parser_reads_frames_and_skips_comments() -> None:
    text = ': ping\n\nid: 1\nevent: tick\ndata: {"seq": 1}\n\n:pad xxxx\nid:2\nevent:end\ndata:{}\n\n'
    assert parse(text) == [SSEFrame("tick", '{"seq": 1}', "1"), SSEFrame("end", "{}", "2")]


def test_parser_joins_data_lines_and_drops_frames_without_data() -> None:
    frames = parse("event: x\n\ndata: a\ndata:  b\nretry: 10\nunknown\n\n")
    assert frames == [SSEFrame("message", "a\n b", None)]


def test_decode_event_reads_the_whole_event_from_data() -> None:
    event = {"seq": 3, "type": "tick", "data": {"i": 1}, "ts": "2025-01-01T00:00:00Z"}
    assert decode_event(SSEFrame("tick", json.dumps(event), "3")) == event
    assert decode_event(SSEFrame("tick", "[1]", "4")) == {"seq": 4, "type": "tick", "data": [1], "ts": None}
    assert decode_event(SSEFrame("message", "not json", None)) is None


def test_reconnect_backoff_grows_with_small_jitter_and_is_capped() -> None:
    policy = Reconnect(initial_delay_s=0.1, max_delay_s=1.0, jitter=0.2)
    assert 0.08 <= policy.delay(1) <= 0.12
    assert 0.32 <= policy.delay(3) <= 0.48
    assert 0.8 <= policy.delay(30) <= 1.2


def test_the_client_ends_an_idle_connection_before_the_servers_keep_alive_would() -> None:
    """Else a request sent on a connection as the server closes it is reset."""
    assert runyard.Settings().keep_alive_s > IDLE_EXPIRY_S
    for client in (Client(), AsyncClient()):
        pool = client._http._transport._pool  # type: ignore[union-attr]  # httpx keeps it private
        assert pool._keepalive_expiry == IDLE_EXPIRY_S


# -- streams -------------------------------------------------------------------------


async def test_stream_delivers_every_event_in_order_and_stops_after_end(fake: FakeServer) -> None:
    async with AsyncClient(fake.url) as client:
        run = await client.create("ticker", {"count": 20, "interval_ms": 2})
        events = await collect(client, run["run_id"])
    assert_complete(events)
    assert [e["data"]["i"] for e in events if e["type"] == "tick"] == list(range(20))
    assert events[-1]["data"] == {"status": "succeeded", "output": {"count": 20}}
    assert set(events[0]) == {"seq", "type", "data", "ts"}
    assert fake.state.connections == [0]


@pytest.mark.parametrize(
    "drops",
    [[0], [1], [5], [21], [1, 1, 1], [3, 10, 2, 7]],
    ids=lambda drops: "drops-after-" + "-".join(map(str, drops)),
)
async def test_stream_resumes_after_dropped_connections_with_no_gap_or_duplicate(
    fake: FakeServer, drops: list[int]
) -> None:
    fake.state.faults = [Fault("abort", k) for k in drops]
    async with AsyncClient(fake.url, reconnect=FAST) as client:
        run = await client.create("ticker", {"count": 20, "interval_ms": 1})
        events = await collect(client, run["run_id"])
    assert_complete(events)
    assert len(events) == 23
    # Each reconnect asked for exactly what followed the last event seen.
    assert fake.state.connections == [0, *[sum(drops[: i + 1]) for i in range(len(drops))]]


async def test_stream_resumes_when_the_server_ends_it_before_end(fake: FakeServer) -> None:
    fake.state.faults = [Fault("close", 4), Fault("close", 0), Fault("close", 7)]
    async with AsyncClient(fake.url, reconnect=FAST) as client:
        run = await client.create("ticker", {"count": 15, "interval_ms": 1})
        events = await collect(client, run["run_id"])
    assert_complete(events)
    assert fake.state.connections == [0, 4, 4, 11]


async def test_stream_drops_events_a_server_sends_twice(fake: FakeServer) -> None:
    fake.state.faults = [Fault("abort", 6), Fault("rewind", 4)]
    async with AsyncClient(fake.url, reconnect=FAST) as client:
        run = await client.create("ticker", {"count": 10})
        events = await collect(client, run["run_id"])
    assert_complete(events)
    assert fake.state.connections == [0, 6]


async def test_stream_survives_a_server_restart(fake: FakeServer) -> None:
    async with AsyncClient(fake.url, reconnect=Reconnect(initial_delay_s=0.05)) as client:
        run = await client.create("ticker", {"count": 40, "interval_ms": 15})
        events: list[dict[str, Any]] = []
        async for event in client.stream(run["run_id"]):
            events.append(event)
            if event["seq"] == 8:
                await asyncio.to_thread(fake.restart)
    assert_complete(events)
    assert len(events) == 43
    assert len(fake.state.connections) >= 2 and fake.state.connections[1] >= 8


async def test_stream_starts_after_the_given_seq(fake: FakeServer) -> None:
    async with AsyncClient(fake.url) as client:
        run = await client.create("ticker", {"count": 5})
        events = await collect(client, run["run_id"], after=3)
    assert_complete(events, first=4)
    assert fake.state.connections == [3]


async def test_stream_of_a_finished_run_from_its_last_seq_ends_at_once(fake: FakeServer) -> None:
    async with AsyncClient(fake.url, reconnect=FAST) as client:
        run = await client.create("ticker", {"count": 2})
        last_seq = (await client.snapshot(run["run_id"]))["last_seq"]
        assert await collect(client, run["run_id"], after=last_seq) == []


async def test_stream_gives_up_with_stream_lost_when_the_server_stays_away(fake: FakeServer) -> None:
    policy = Reconnect(attempts=3, initial_delay_s=0.01)
    async with AsyncClient(fake.url, reconnect=policy) as client:
        run = await client.create("ticker", {"count": 100, "interval_ms": 10})
        fake.state.faults = [Fault("abort", 2)]
        seen: list[int] = []
        with pytest.raises(StreamLost, match="after seq 2 and 3 reconnect attempts"):
            async for event in client.stream(run["run_id"]):
                seen.append(event["seq"])
                if event["seq"] == 2:
                    await asyncio.to_thread(fake.stop)
        fake.start()  # so that the fixture can stop it
    assert seen == [1, 2]


async def test_stream_of_an_unknown_run_raises_api_error_without_retrying(fake: FakeServer) -> None:
    async with AsyncClient(fake.url, reconnect=FAST) as client:
        with pytest.raises(APIError) as info:
            await collect(client, "run_missing")
    assert (info.value.status, info.value.code) == (404, "run_not_found")
    assert fake.state.connections == []


# -- errors ------------------------------------------------------------------------------


async def test_api_error_carries_the_envelope(fake: FakeServer) -> None:
    async with AsyncClient(fake.url) as client:
        with pytest.raises(APIError) as info:
            await client.create("nope", {})
    error = info.value
    assert isinstance(error, RunyardError)
    assert (error.status, error.code, error.message) == (404, "pipeline_not_found", "no pipeline named 'nope'")
    assert str(error) == "404 pipeline_not_found: no pipeline named 'nope'"


async def test_api_error_for_invalid_input_quota_and_a_non_json_answer(fake: FakeServer) -> None:
    async with AsyncClient(fake.url) as client:
        with pytest.raises(APIError) as invalid:
            await client.create("ticker", {"count": "many"})
        with pytest.raises(APIError) as quota:
            await client.create("quota", {})
        with pytest.raises(APIError) as crash:
            await client.create("crash", {})
    assert (invalid.value.status, invalid.value.code) == (422, "invalid_request")
    assert (quota.value.code, quota.value.retry_after) == ("quota_exceeded", 7.0)
    assert (crash.value.status, crash.value.code, crash.value.message) == (502, "http_502", "upstream exploded")


def test_api_error_from_answers_of_any_shape() -> None:
    envelope = {"error": {"code": "method_not_allowed", "message": "use POST"}}
    assert vars(api_error(httpx.Response(405, json=envelope))) == {
        "message": "use POST",
        "status": 405,
        "code": "method_not_allowed",
        "retry_after": None,
        "_details": {},
    }
    suggested = {"error": {"code": "pipeline_not_found", "message": "no pipeline", "suggestions": ["ticker"]}}
    assert api_error(httpx.Response(404, json=suggested)).details == {"suggestions": ["ticker"]}
    odd = api_error(httpx.Response(503, json={"detail": "down"}, headers={"Retry-After": "soon"}))
    assert (odd.code, odd.message, odd.retry_after) == ("http_503", '{"detail":"down"}', None)
    assert api_error(httpx.Response(500)).message == "Internal Server Error"


# -- the rest of the API -----------------------------------------------------------------


async def test_wait_returns_the_final_snapshot(fake: FakeServer) -> None:
    fake.state.faults = [Fault("abort", 3)]
    async with AsyncClient(fake.url, reconnect=FAST) as client:
        run = await client.create("ticker", {"count": 10, "interval_ms": 5})
        final = await client.wait(run["run_id"])
        again = await client.wait(run["run_id"])
    assert final["status"] == "succeeded"
    assert final["output"] == {"count": 10}
    assert final["last_seq"] == 13
    assert again == final


async def test_wait_raises_timeout_error_when_the_run_takes_longer(fake: FakeServer) -> None:
    async with AsyncClient(fake.url) as client:
        run = await client.create("ticker", {"count": 100, "interval_ms": 50})
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await client.wait(run["run_id"], timeout=0.3)
    assert time.monotonic() - started < 2


async def test_client_id_and_token_are_sent_and_runs_are_per_owner(fake: FakeServer) -> None:
    async with AsyncClient(fake.url, client_id="alice", token="t0k") as alice:
        run = await alice.create("ticker", {"count": 1})
    assert fake.state.headers[-1]["x-client-id"] == "alice"
    assert fake.state.headers[-1]["authorization"] == "Bearer t0k"
    async with AsyncClient(fake.url, client_id="bob") as bob:
        with pytest.raises(APIError, match="run_not_found"):
            await bob.snapshot(run["run_id"])
        assert (await bob.list_runs())["runs"] == []


async def test_events_cancel_sessions_pipelines_and_list_runs(fake: FakeServer) -> None:
    async with AsyncClient(fake.url, client_id="carol") as client:
        session = await client.create_session({"topic": "tides"})
        assert (await client.session(session["session_id"]))["metadata"] == {"topic": "tides"}
        done = await client.create("ticker", {"count": 3}, session_id=session["session_id"])
        page = await client.events(done["run_id"], after=1, limit=2)
        assert [e["seq"] for e in page["events"]] == [2, 3]
        assert page["next_after"] == 3
        slow = await client.create("ticker", {"count": 1000, "interval_ms": 20}, metadata={"k": "v"})
        cancelled = await client.cancel(slow["run_id"])
        assert cancelled["status"] == "cancelled"
        with pytest.raises(APIError, match="run_finished"):
            await client.cancel(slow["run_id"])
        listed = await client.list_runs(session_id=session["session_id"])
        assert [r["run_id"] for r in listed["runs"]] == [done["run_id"]]
        assert [p["name"] for p in (await client.pipelines())["pipelines"]] == ["ticker", "script"]
        await client.delete_session(session["session_id"])
        with pytest.raises(APIError, match="session_not_found"):
            await client.session(session["session_id"])
    assert fake.state.cancels == [slow["run_id"]]


def test_sync_client_streams_resumes_waits_and_raises(fake: FakeServer) -> None:
    fake.state.faults = [Fault("abort", 2), Fault("close", 5)]
    with Client(fake.url, client_id="dave", reconnect=FAST) as client:
        run = client.create("ticker", {"count": 12, "interval_ms": 1})
        events = list(client.stream(run["run_id"]))
        assert client.wait(run["run_id"], timeout=5)["status"] == "succeeded"
        assert client.events(run["run_id"])["status"] == "succeeded"
        with pytest.raises(APIError) as info:
            client.snapshot("run_missing")
    assert_complete(events)
    assert fake.state.connections == [0, 2, 7]
    assert info.value.code == "run_not_found"


def test_sync_stream_closed_early_releases_its_connection(fake: FakeServer) -> None:
    with Client(fake.url) as client:
        run = client.create("ticker", {"count": 100, "interval_ms": 5})
        stream = client.stream(run["run_id"])
        assert next(iter(stream))["seq"] == 1
        stream.close()  # type: ignore[attr-defined]
        assert client.snapshot(run["run_id"])["run_id"] == run["run_id"]


def test_nothing_listening_raises_connection_failed_naming_the_url() -> None:
    """Issue 16: the client raised httpx's ConnectError; it raises runyard's own error,
    which is still an httpx.TransportError for code that caught that."""
    with Client("http://127.0.0.1:9", timeout=1) as client, pytest.raises(runyard.ConnectionFailed) as info:
        client.pipelines()
    assert isinstance(info.value, RunyardError) and isinstance(info.value, httpx.TransportError)
    assert str(info.value).startswith("cannot reach the server at http://127.0.0.1:9: ")
    assert info.value.url == "http://127.0.0.1:9" and info.value.code == "connection_failed"


async def test_a_stream_whose_first_connection_is_refused_fails_at_once() -> None:
    """Issue 16: tail against a server not running retried silently for 28 s."""
    policy = Reconnect(attempts=1000, max_wait_s=600)  # would retry for minutes
    async with AsyncClient("127.0.0.1:9", reconnect=policy) as client:
        with pytest.raises(runyard.ConnectionFailed, match=r"at http://127\.0\.0\.1:9"):
            await collect(client, "run_1")
    with Client("127.0.0.1:9", reconnect=policy) as sync, pytest.raises(runyard.ConnectionFailed):
        next(iter(sync.stream("run_1")))


async def test_a_url_without_a_scheme_is_http(fake: FakeServer) -> None:
    async with AsyncClient(fake.url.removeprefix("http://")) as client:
        run = await client.create("ticker", {"count": 1})
        assert client.url == fake.url
        assert (await client.wait(run["run_id"], timeout=10))["status"] == "succeeded"


def test_results_are_typed_dicts_that_are_still_plain_dicts(fake: FakeServer) -> None:
    with Client(fake.url) as client:
        run: RunSnapshot = client.create("ticker", {"count": 1})
        done = client.wait(run["run_id"], timeout=10)
        page = client.events(run["run_id"])
    assert type(run) is dict and type(page) is dict
    assert done["status"] == "succeeded" and page["events"][0]["seq"] == 1
    assert typing.get_type_hints(Client.snapshot)["return"] is RunSnapshot
    assert typing.get_type_hints(Client.events)["return"] is EventPage
    assert typing.get_type_hints(AsyncClient.list_runs)["return"] is RunPage
    assert typing.get_type_hints(Client.crons)["return"] == list[Cron]
    assert typing.get_type_hints(AsyncClient.get_item)["return"] is Item


# -- answering a waiting run ---------------------------------------------------------------

APPROVE = {"type": "object", "properties": {"approve": {"type": "boolean"}}, "required": ["approve"]}
ASK = {"request": {"question": "approve?"}, "schema": APPROVE}


async def wait_until_waiting(client: AsyncClient, run_id: str) -> dict[str, Any]:
    """The run's snapshot once it waits, read from the stream's ``waiting`` status (no polling)."""
    async for event in client.stream(run_id):
        if event["type"] == "status" and event["data"]["status"] == "waiting":
            return await client.snapshot(run_id)
    raise AssertionError(f"run {run_id} ended without waiting")


async def test_answer_lets_a_waiting_run_go_on_and_its_stream_continues_to_the_end(fake: FakeServer) -> None:
    async with AsyncClient(fake.url) as client:
        run = await client.create("asker", {"asks": [ASK, {"request": "and your name?"}]})
        events: list[dict[str, Any]] = []
        async for event in client.stream(run["run_id"]):
            events.append(event)
            if event["type"] == "status" and event["data"]["status"] == "waiting":
                asked = (await client.snapshot(run["run_id"]))["waiting_for"]
                value = {"approve": True} if asked["schema"] else "Ada"
                answered = await client.answer(run["run_id"], value, ask_id=asked["ask_id"])
                assert (answered["status"], answered["waiting_for"]) == ("queued", None)
    assert_complete(events)
    requested = [e["data"] for e in events if e["type"] == "input.requested"]
    assert requested == [
        {"ask_id": "ask_1", "request": {"question": "approve?"}, "schema": APPROVE},
        {"ask_id": "ask_2", "request": "and your name?", "schema": None},
    ]
    assert [e["data"] for e in events if e["type"] == "input.received"] == [{"ask_id": "ask_1"}, {"ask_id": "ask_2"}]
    assert events[-1]["data"]["output"] == {"answers": [{"approve": True}, "Ada"]}
    assert [body for _, body in fake.state.answers] == [
        {"value": {"approve": True}, "ask_id": "ask_1"},
        {"value": "Ada", "ask_id": "ask_2"},
    ]


async def test_answer_without_ask_id_sends_only_the_value(fake: FakeServer) -> None:
    async with AsyncClient(fake.url) as client:
        run = await client.create("asker", {"asks": [{"request": "anything?"}]})
        await wait_until_waiting(client, run["run_id"])
        await client.answer(run["run_id"], None)
        final = await client.wait(run["run_id"], timeout=5)
    assert fake.state.answers == [(run["run_id"], {"value": None})]
    assert final["output"] == {"answers": [None]}


@pytest.mark.parametrize(
    ("target", "value", "ask_id", "status", "code"),
    [
        ("missing", {"approve": True}, None, 404, "run_not_found"),
        ("finished", {"approve": True}, None, 409, "run_not_waiting"),
        ("waiting", {"approve": True}, "ask_9", 409, "ask_mismatch"),
        ("waiting", {"approve": "yes"}, "ask_1", 422, "invalid_input"),
        ("waiting", {}, None, 422, "invalid_input"),
    ],
)
async def test_refused_answers_raise_api_error_with_the_envelope(
    fake: FakeServer, target: str, value: Any, ask_id: str | None, status: int, code: str
) -> None:
    async with AsyncClient(fake.url) as client:
        waiting = await client.create("asker", {"asks": [ASK]})
        await wait_until_waiting(client, waiting["run_id"])
        finished = await client.create("ticker", {"count": 1})
        run_id = {"missing": "run_missing", "finished": finished["run_id"], "waiting": waiting["run_id"]}[target]
        with pytest.raises(APIError) as info:
            await client.answer(run_id, value, ask_id=ask_id)
        assert (await client.snapshot(waiting["run_id"]))["status"] == "waiting"  # a refusal changes nothing
    assert (info.value.status, info.value.code) == (status, code)
    assert fake.state.answers == []


def test_sync_client_answers_and_raises_the_same_errors(fake: FakeServer) -> None:
    with Client(fake.url) as client:
        run = client.create("asker", {"asks": [ASK]})
        for event in client.stream(run["run_id"]):
            if event["type"] == "input.requested":
                break
        snapshot = client.snapshot(run["run_id"])
        assert snapshot["status"] == "waiting"
        with pytest.raises(APIError) as refused:
            client.answer(run["run_id"], {"approve": 1})
        answered = client.answer(run["run_id"], {"approve": False}, ask_id=snapshot["waiting_for"]["ask_id"])
        final = client.wait(run["run_id"], timeout=5)
        with pytest.raises(APIError) as again:
            client.answer(run["run_id"], {"approve": True})
    assert (refused.value.status, refused.value.code) == (422, "invalid_input")
    assert answered["status"] == "queued"
    assert final["output"] == {"answers": [{"approve": False}]}
    assert (again.value.status, again.value.code) == (409, "run_not_waiting")


# -- against the runyard server itself -------------------------------------------------------


async def test_against_the_runyard_server() -> None:
    from tests.support import make_app, serve_in_thread

    with serve_in_thread(make_app(store="memory://")) as url:
        async with AsyncClient(url, client_id="zoe") as client:
            run = await client.create("ticker", {"marker": "m", "count": 5, "interval_ms": 1})
            events = await collect(client, run["run_id"])
            final = await client.wait(run["run_id"])
            resumed = await collect(client, run["run_id"], after=3)
            with pytest.raises(APIError) as invalid:
                await client.create("ticker", {"count": -1})
    assert_complete(events)
    assert [e["type"] for e in events] == ["status", *["tick"] * 5, "status", "end"]
    assert (final["status"], final["output"], final["last_seq"]) == ("succeeded", {"marker": "m", "count": 5}, 8)
    assert resumed == events[3:]
    assert (invalid.value.status, invalid.value.code) == (422, "invalid_request")


async def test_stream_resumes_across_a_killed_and_restarted_runyard_process(tmp_path: Any) -> None:
    """The run's worker dies with the process; the stream picks up its ``worker_lost`` ending."""
    from tests.support import ServerProcess

    env = {"RUNYARD_STORE": f"sqlite:///{tmp_path}/r.db", "RUNYARD_LEASE_S": "1", "RUNYARD_SWEEP_INTERVAL_S": "0.5"}
    server = ServerProcess(env).start()
    try:
        async with AsyncClient(server.url, reconnect=Reconnect(initial_delay_s=0.05, max_delay_s=0.5)) as client:
            run = await client.create("ticker", {"marker": "m", "count": 500, "interval_ms": 20})
            events: list[dict[str, Any]] = []
            async for event in client.stream(run["run_id"]):
                events.append(event)
                if event["seq"] == 5:
                    server.kill()
                    await asyncio.to_thread(server.start)
    finally:
        server.stop()
    assert_complete(events)
    assert events[-1]["data"]["error"]["code"] == "worker_lost"


async def test_answer_against_the_runyard_server() -> None:
    from tests.support import make_app, serve_in_thread

    with serve_in_thread(make_app(store="memory://")) as url:
        async with AsyncClient(url, client_id="yan") as client:
            run = await client.create("approve", {"question": "ship it?"})
            waiting = await wait_until_waiting(client, run["run_id"])
            ask_id = waiting["waiting_for"]["ask_id"]
            listed = await client.list_runs(status="waiting")
            refused = []
            for value, asked in (({"ok": "yes"}, ask_id), ({"ok": True}, "ask_other")):
                with pytest.raises(APIError) as info:
                    await client.answer(run["run_id"], value, ask_id=asked)
                refused.append((info.value.status, info.value.code))
            answered = await client.answer(run["run_id"], {"ok": True}, ask_id=ask_id)
            final = await client.wait(run["run_id"], timeout=10)
            with pytest.raises(APIError) as late:
                await client.answer(run["run_id"], {"ok": True})
    assert waiting["waiting_for"]["request"] == {"question": "ship it?"}
    assert [r["run_id"] for r in listed["runs"]] == [run["run_id"]]
    assert refused == [(422, "invalid_input"), (409, "ask_mismatch")]
    assert answered["status"] == "queued"
    assert (final["status"], final["output"]) == ("succeeded", {"answer": {"ok": True}})
    assert (late.value.status, late.value.code) == (409, "run_not_waiting")
