"""The bundled demo pipelines, run directly against a recording fake context."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from aiohttp import web

from runyard.context import _current, current_run
from runyard.demo import app
from runyard.demo import research as research_module
from runyard.errors import InvalidRequest


class FakeMemory:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def history(self) -> list[dict[str, Any]]:
        return [dict(message) for message in self.messages]

    async def append(self, role: str, content: Any, **extra: Any) -> None:
        self.messages.append({**extra, "role": role, "content": content, "ts": "2024-01-01T00:00:00Z"})


class RecordingContext:
    """The part of ``RunContext`` the demo pipelines use, recording what they do."""

    def __init__(self, memory: FakeMemory | None = None) -> None:
        self.owner = "tester"
        self.events: list[tuple[str, Any]] = []
        self.memory = memory or FakeMemory()
        self.held: list[str] = []
        self.acquired: list[str] = []

    async def emit(self, type: str, data: Any = None) -> int:
        self.events.append((type, data))
        return len(self.events)

    async def phase(self, name: str, status: str = "started", **extra: Any) -> int:
        return await self.emit("phase", {"name": name, "status": status, **extra})

    async def token(self, text: str) -> int:
        return await self.emit("token", {"text": text})

    async def progress(self, current: float, total: float | None = None, message: str | None = None) -> int:
        return await self.emit("progress", {"current": current, "total": total, "message": message})

    @asynccontextmanager
    async def limit(self, name: str, tokens: int = 0) -> AsyncIterator[None]:
        app.limits.get(name)  # raises unless the demo app declared it
        self.acquired.append(name)
        self.held.append(name)
        try:
            yield
        finally:
            self.held.remove(name)

    async def call(self, name: str, fn: Any, *args: Any, retries: int = 3, tokens: int = 0, **kwargs: Any) -> Any:
        async with self.limit(name, tokens):
            return await fn(*args, **kwargs)

    def of_type(self, type: str) -> list[Any]:
        return [data for kind, data in self.events if kind == type]

    def text(self) -> str:
        return "".join(data["text"] for data in self.of_type("token"))


async def run(pipeline: str, raw_input: Any, ctx: RecordingContext) -> Any:
    """Validate the input as the server would, then run the pipeline as ``ctx``'s run."""
    spec = app.pipelines[pipeline]
    argument = spec.argument(spec.validate_input(raw_input))
    token = _current.set(ctx)  # type: ignore[arg-type]
    try:
        return await spec.func(ctx, argument)  # type: ignore[arg-type]
    finally:
        _current.reset(token)


@pytest.fixture(autouse=True)
def no_delays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNYARD_DEMO_SPEED", "0")
    monkeypatch.delenv("RUNYARD_LLM_BASE_URL", raising=False)


def test_the_demo_app_has_the_four_pipelines_with_descriptions() -> None:
    assert sorted(app.pipelines) == ["approval", "chat", "research", "ticker"]
    for spec in app.pipelines.values():
        assert spec.description
        assert spec.input_schema()["type"] == "object"


# ticker


async def test_ticker_emits_count_ticks_in_order() -> None:
    ctx = RecordingContext()
    output = await run("ticker", {"marker": "m-1", "count": 50, "payload_bytes": 100}, ctx)

    assert output == {"marker": "m-1", "count": 50}
    assert [kind for kind, _ in ctx.events] == ["tick"] * 50
    ticks = ctx.of_type("tick")
    assert [tick["i"] for tick in ticks] == list(range(50))
    assert {tick["marker"] for tick in ticks} == {"m-1"}
    assert {tick["pad"] for tick in ticks} == {"x" * 100}
    assert all(isinstance(tick["t"], float) for tick in ticks)
    assert ticks[0]["t"] <= ticks[-1]["t"]


async def test_ticker_defaults_and_zero_count() -> None:
    ctx = RecordingContext()
    assert await run("ticker", {"marker": "z", "count": 0}, ctx) == {"marker": "z", "count": 0}
    assert ctx.events == []

    ctx = RecordingContext()
    await run("ticker", {"marker": "d"}, ctx)
    assert [tick["pad"] for tick in ctx.of_type("tick")] == [""] * 10


async def test_ticker_sleeps_interval_between_ticks() -> None:
    ctx = RecordingContext()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await run("ticker", {"marker": "slow", "count": 3, "interval_ms": 20}, ctx)
    assert loop.time() - started >= 0.035  # two pauses, none after the last tick
    assert len(ctx.of_type("tick")) == 3


async def test_ticker_fail_at_raises_after_k_ticks() -> None:
    ctx = RecordingContext()
    with pytest.raises(RuntimeError, match="failed at 3"):
        await run("ticker", {"marker": "f", "count": 10, "fail_at": 3}, ctx)
    assert [tick["i"] for tick in ctx.of_type("tick")] == [0, 1, 2]

    ctx = RecordingContext()
    with pytest.raises(RuntimeError, match="failed at 0"):
        await run("ticker", {"marker": "f", "count": 10, "fail_at": 0}, ctx)
    assert ctx.events == []


async def test_ticker_fail_at_beyond_count_still_fails_after_all_ticks() -> None:
    ctx = RecordingContext()
    with pytest.raises(RuntimeError):
        await run("ticker", {"marker": "f", "count": 4, "fail_at": 9}, ctx)
    assert [tick["i"] for tick in ctx.of_type("tick")] == [0, 1, 2, 3]


def test_ticker_accepts_the_limits() -> None:
    spec = app.pipelines["ticker"]
    stored = spec.validate_input({"marker": "x" * 256, "count": 1_000_000, "payload_bytes": 65_536})
    assert stored == {
        "marker": "x" * 256,
        "count": 1_000_000,
        "interval_ms": 0,
        "fail_at": None,
        "payload_bytes": 65_536,
    }


@pytest.mark.parametrize(
    "raw",
    [
        {"marker": "m", "count": 1_000_001},
        {"marker": "m", "payload_bytes": 65_537},
        {"marker": "m", "count": -1},
        {"marker": "m", "interval_ms": -5},
        {"marker": "m", "fail_at": -1},
        {"marker": "m", "payload_bytes": -1},
        {"marker": "m", "interval_ms": 60_001},
        {"marker": "x" * 257},
        {"marker": "m", "colour": "red"},
        {"marker": "m", "count": "10"},
        {"marker": "m", "count": 1.5},
        {"marker": "m", "count": 2.0},
        {"marker": "m", "count": True},
        {"marker": 5},
        {"count": 3},
        ["marker", "m"],
        None,
    ],
    ids=repr,
)
def test_ticker_rejects_bad_input(raw: Any) -> None:
    with pytest.raises(InvalidRequest):
        app.pipelines["ticker"].validate_input(raw)


# research


async def test_research_runs_four_phases_with_findings_and_a_report() -> None:
    ctx = RecordingContext()
    output = await run("research", {"topic": "solid-state batteries"}, ctx)

    phases = [(data["name"], data["status"]) for data in ctx.of_type("phase")]
    assert phases == [
        ("plan", "started"),
        ("plan", "done"),
        ("search", "started"),
        ("search", "done"),
        ("read", "started"),
        ("read", "done"),
        ("write", "started"),
        ("write", "done"),
    ]
    findings = ctx.of_type("finding")
    assert findings
    for finding in findings:
        assert set(finding) == {"title", "url", "summary"}
        assert finding["url"].startswith("https://example.invalid/")
    assert ctx.text() == output["report"]
    assert len(ctx.of_type("token")) > 10
    assert output["topic"] == "solid-state batteries"
    assert output["sources"] == [finding["url"] for finding in findings]
    progress = ctx.of_type("progress")
    assert progress and progress[-1]["current"] == progress[-1]["total"]


async def test_research_is_deterministic() -> None:
    first, second = RecordingContext(), RecordingContext()
    outputs = [await run("research", {"topic": "tides"}, ctx) for ctx in (first, second)]
    assert outputs[0] == outputs[1]
    assert first.events == second.events


async def test_every_search_holds_the_search_api_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    real_search_api = research_module.search_api
    calls: list[str] = []

    async def checked_search_api(query: str) -> list[research_module.Hit]:
        ctx = current_run()
        assert isinstance(ctx, RecordingContext)
        assert "search-api" in ctx.held, "search API called outside ctx.limit('search-api')"
        calls.append(query)
        return await real_search_api(query)

    monkeypatch.setattr(research_module, "search_api", checked_search_api)
    ctx = RecordingContext()
    await run("research", {"topic": "coral reefs"}, ctx)

    assert calls
    assert ctx.acquired == ["search-api"] * len(calls)
    assert [data["query"] for data in ctx.of_type("search")] == calls
    assert ctx.held == []
    assert app.limits.get("search-api").concurrency == 4


async def test_concurrent_research_runs_each_see_their_own_run() -> None:
    """Tools find their run through current_run(); concurrent runs never cross."""
    contexts = [RecordingContext() for _ in range(4)]
    topics = [f"topic {n}" for n in range(4)]
    await asyncio.gather(*(run("research", {"topic": t}, c) for t, c in zip(topics, contexts, strict=True)))
    for topic, ctx in zip(topics, contexts, strict=True):
        assert all(data["query"].startswith(topic) for data in ctx.of_type("search"))


@pytest.mark.parametrize("raw", [{"topic": ""}, {"topic": "   "}, {"topic": "x" * 201}, {}, {"topic": 3}])
def test_research_rejects_bad_input(raw: Any) -> None:
    with pytest.raises(InvalidRequest):
        app.pipelines["research"].validate_input(raw)


# chat


async def test_chat_remembers_across_turns() -> None:
    memory = FakeMemory()

    async def turn(message: str) -> tuple[dict[str, Any], RecordingContext]:
        ctx = RecordingContext(memory)
        output = await run("chat", {"message": message}, ctx)
        assert ctx.text() == output["reply"]
        return output, ctx

    first, _ = await turn("Hello, my name is Ada.")
    assert first == {"reply": "Nice to meet you, Ada! I will remember that.", "turns": 1}

    second, ctx = await turn("I like tea")
    assert second["turns"] == 2
    assert "Hello, my name is Ada." in second["reply"]
    assert len(ctx.of_type("token")) > 3

    third, _ = await turn("What is my name?")
    assert third == {"reply": "Your name is Ada.", "turns": 3}

    fourth, _ = await turn("What did I say?")
    assert "I like tea" in fourth["reply"]
    assert [(m["role"], m["content"]) for m in memory.messages][:2] == [
        ("user", "Hello, my name is Ada."),
        ("assistant", first["reply"]),
    ]
    assert len(memory.messages) == 8


async def test_chat_without_memory_knows_nothing() -> None:
    output = await run("chat", {"message": "what is my name"}, RecordingContext())
    assert output == {"reply": "You have not told me your name yet.", "turns": 1}


@pytest.fixture
async def fake_llm() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A tiny OpenAI-compatible server on loopback; yields its base URL and the requests it got."""
    received: list[dict[str, Any]] = []

    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        received.append(body)
        turns = sum(1 for m in body["messages"] if m["role"] == "user")
        message = {"role": "assistant", "content": f"LLM says hi (turn {turns})"}
        return web.json_response({"choices": [{"index": 0, "message": message}]})

    server = web.Application()
    server.router.add_post("/v1/chat/completions", completions)
    runner = web.AppRunner(server)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1", received
    finally:
        await runner.cleanup()


async def test_chat_uses_the_llm_endpoint_when_configured(
    fake_llm: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base_url, received = fake_llm
    monkeypatch.setenv("RUNYARD_LLM_BASE_URL", base_url)
    memory = FakeMemory()

    first = await run("chat", {"message": "hello"}, RecordingContext(memory))
    ctx = RecordingContext(memory)
    second = await run("chat", {"message": "again"}, ctx)

    assert first == {"reply": "LLM says hi (turn 1)", "turns": 1}
    assert second == {"reply": "LLM says hi (turn 2)", "turns": 2}
    assert ctx.text() == "LLM says hi (turn 2)"
    assert received[1]["stream"] is False
    assert [(m["role"], m["content"]) for m in received[1]["messages"][1:]] == [
        ("user", "hello"),
        ("assistant", "LLM says hi (turn 1)"),
        ("user", "again"),
    ]


async def test_chat_fails_clearly_when_the_llm_endpoint_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("RUNYARD_LLM_BASE_URL", f"http://127.0.0.1:{port}/v1")
    with pytest.raises(httpx.HTTPError):
        await run("chat", {"message": "hello"}, RecordingContext())


@pytest.mark.parametrize("raw", [{"message": ""}, {"message": " \n"}, {"message": "x" * 4001}, {"msg": "hi"}])
def test_chat_rejects_bad_input(raw: Any) -> None:
    with pytest.raises(InvalidRequest):
        app.pipelines["chat"].validate_input(raw)
