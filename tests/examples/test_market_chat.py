"""examples/market_chat: a chatbot whose memory belongs to its conversation alone
(bounded, with large tool outputs trimmed, expiring), serving 100 users at once.

The LLM and the market-data API are the example's fakes on loopback; the chat
app is served in a thread for the memory specs, and as a real ``runyard serve``
process for the load (100 conversations, then ``runyard loadtest``).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.market_chat.app import MAX_TOOL_CHARS, Services, build_app, json_size, trim_tool_output
from examples.market_chat.fake_llm import CONTEXT_CHARS, FakeLLM
from examples.market_chat.fake_quotes import FakeQuotes, quote
from runyard import AsyncClient, Settings
from runyard.cli import main
from tests.support import REPO, ServerProcess, serve_asgi, serve_in_thread

APP = "examples.market_chat.app:app"
TICKERS = re.compile(r"\bT\d+\b")
RUNYARD_CLI = "import sys; from runyard.cli import main; sys.exit(main())"  # when there is no `runyard` script


@dataclass
class Fakes:
    llm: FakeLLM
    quotes: FakeQuotes
    services: Services


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    llm, quotes = FakeLLM(), FakeQuotes()
    with serve_asgi(llm.asgi()) as llm_url, serve_asgi(quotes.asgi()) as quotes_url:
        yield Fakes(llm, quotes, Services(llm_url=f"{llm_url}/v1", quotes_url=quotes_url))


def serve_example(fakes: Fakes, **settings: Any) -> AbstractContextManager[str]:
    """The example in a thread of this process, on ``memory://`` and ``settings``."""
    return serve_in_thread(build_app(Settings(store="memory://", **settings), fakes.services))


@pytest.fixture(scope="module")
def server(fakes: Fakes) -> Iterator[str]:
    with serve_example(fakes) as url:
        yield url


@dataclass
class Turn:
    run_id: str
    session_id: str
    reply: str
    tokens: str
    events: list[dict[str, Any]]


async def say(client: AsyncClient, message: str, session_id: str | None = None) -> Turn:
    """One chat message: the run's whole stream, checked to have succeeded."""
    run = await client.create("chat", {"message": message}, session_id=session_id)
    events = [event async for event in client.stream(run["run_id"])]
    end = events[-1]
    assert end["type"] == "end" and end["data"]["status"] == "succeeded", end
    tokens = "".join(event["data"]["text"] for event in events if event["type"] == "token")
    return Turn(run["run_id"], run["session_id"], end["data"]["output"]["reply"], tokens, events)


def contents(session: dict[str, Any]) -> str:
    return json.dumps([message["content"] for message in session["history"]])


# -- one conversation -----------------------------------------------------------------


async def test_a_conversation_remembers_what_it_was_told_and_a_new_one_starts_blank(server: str) -> None:
    async with AsyncClient(server, client_id="ada") as client:
        told = await say(client, "my ticker is ACME")
        asked = await say(client, "what is my ticker?", told.session_id)
        elsewhere = await say(client, "what is my ticker?")  # the same user, another conversation

    assert told.reply == "Noted: your ticker is ACME."
    assert asked.reply == asked.tokens == "Your ticker is ACME."  # streamed as tokens, word by word
    assert elsewhere.reply == "You have not told me your ticker yet."
    assert elsewhere.session_id != told.session_id


async def test_a_quote_enters_memory_trimmed_so_the_conversation_stays_within_the_models_context(
    server: str, fakes: Fakes
) -> None:
    full = quote("ACME")
    assert json_size(full) > CONTEXT_CHARS  # the raw tool output alone would overflow the model

    async with AsyncClient(server, client_id="ada") as client:
        first = await say(client, "what is the price of ACME?")
        for _ in range(3):  # every later turn sends the memory, quotes included, back to the model
            again = await say(client, "and the quote for ACME now?", first.session_id)
        session = await client.session(first.session_id)

    assert first.reply == f"ACME trades at {full['price']:.2f} USD ({full['change_pct']:+.2f}% today)."
    assert again.reply == first.reply
    done = next(e["data"] for e in first.events if e["type"] == "phase" and e["data"]["status"] == "done")
    assert done["symbol"] == "ACME" and done["chars"] == json_size(full) and done["kept_chars"] <= MAX_TOOL_CHARS

    tools = [message for message in session["history"] if message["role"] == "tool"]
    assert len(tools) == 4
    for message in tools:
        assert message["name"] == "get_quote" and message["symbol"] == "ACME"
        assert json_size(message["content"]) <= MAX_TOOL_CHARS
        assert message["content"]["price"] == full["price"]  # the headline survives
        assert message["content"]["intraday"] == full["intraday"][-5:]  # the newest points survive
        assert message["content"]["omitted"] == {"intraday": 995, "news": 15}
    assert fakes.llm.refused == 0 and fakes.llm.largest_prompt_chars < CONTEXT_CHARS


def test_trimming_drops_whole_fields_largest_first_until_the_output_fits() -> None:
    output = {"symbol": "X", "blob": "b" * 5000, "points": list(range(100)), "note": "n" * 300}
    trimmed = trim_tool_output(output, max_chars=500, keep=3)
    assert trimmed == {"symbol": "X", "points": [97, 98, 99], "note": "n" * 300, "omitted": {"points": 97, "blob": 1}}
    assert trim_tool_output({"small": 1}) == {"small": 1}  # what fits is kept as it is


async def test_memory_keeps_only_the_newest_history_max_messages(fakes: Fakes) -> None:
    with serve_example(fakes, history_max=4) as url:
        async with AsyncClient(url, client_id="ada") as client:
            first = await say(client, "my ticker is OLD")
            await say(client, "hello", first.session_id)
            third = await say(client, "hello again", first.session_id)
            forgot = await say(client, "what is my ticker?", first.session_id)
            session = await client.session(first.session_id)

    assert forgot.reply == "You have not told me your ticker yet."  # "OLD" was 6 messages back; 4 are kept
    assert [m["content"] for m in session["history"]] == [
        "hello again",
        third.reply,
        "what is my ticker?",
        forgot.reply,
    ]


async def test_an_idle_conversation_expires_with_its_memory(fakes: Fakes) -> None:
    with serve_example(fakes, session_ttl_s=1.0, sweep_interval_s=0.2) as url:
        async with AsyncClient(url, client_id="ada") as client, httpx.AsyncClient(base_url=url) as http:
            told = await say(client, "my ticker is GONE")
            await asyncio.sleep(1.5)
            again = await http.post(
                "/v1/runs",
                json={"pipeline": "chat", "input": {"message": "what is my ticker?"}, "session_id": told.session_id},
                headers={"X-Client-Id": "ada"},
            )
            session = await client.session(told.session_id)
            finished = await client.snapshot(told.run_id)

    assert again.status_code == 404 and again.json()["error"]["code"] == "session_not_found"
    assert session["status"] == "expired" and session["history"] == []
    assert finished["status"] == "succeeded"  # its runs stay readable


# -- 100 users at once, served by `runyard serve` ---------------------------------------


class ExampleProcess(ServerProcess):
    """``runyard serve APP`` from the repository's root, as its README runs it."""

    def __init__(self, app: str, env: dict[str, str]) -> None:
        super().__init__(env)
        script = Path(sys.executable).with_name("runyard")
        self.command = [str(script)] if script.exists() else [sys.executable, "-c", RUNYARD_CLI]
        self.command += ["serve", app]

    def start(self) -> ExampleProcess:
        self.proc = subprocess.Popen(self.command, cwd=REPO, env=self.env)
        deadline = time.monotonic() + 30
        while self.proc.poll() is None and time.monotonic() < deadline:
            with suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{' '.join(self.command)} did not become ready")


@pytest.fixture(scope="module")
def served(fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {
        "RUNYARD_STORE": f"sqlite:///{tmp_path_factory.mktemp('market_chat')}/runyard.db",
        "RUNYARD_LOG_LEVEL": "WARNING",
        "MARKET_CHAT_LLM_URL": fakes.services.llm_url,
        "MARKET_CHAT_QUOTES_URL": fakes.services.quotes_url,
    }
    process = ExampleProcess(APP, env).start()
    try:
        yield process.url
    finally:
        process.stop()


async def converse(url: str, user: int) -> tuple[Turn, Turn, dict[str, Any]]:
    """User ``user``'s conversation: they tell their ticker, then ask for its price."""
    async with AsyncClient(url, client_id=f"user-{user}", timeout=60) as client:
        told = await say(client, f"my ticker is T{user}")
        asked = await say(client, "what is the price of my ticker?", told.session_id)
        return told, asked, await client.session(told.session_id)


async def test_a_hundred_users_chat_at_once_and_no_memory_crosses_conversations(served: str, fakes: Fakes) -> None:
    served_before = fakes.quotes.served
    async with asyncio.timeout(120):  # ~25 s alone; the bound is for a hang, not a speed
        conversations = await asyncio.gather(*(converse(served, user) for user in range(100)))

    for user, (told, asked, session) in enumerate(conversations):
        mine = f"T{user}"
        assert told.reply == told.tokens == f"Noted: your ticker is {mine}."
        assert asked.tokens == asked.reply and asked.reply.startswith(f"{mine} trades at ")
        assert asked.session_id == told.session_id
        assert set(TICKERS.findall(asked.reply)) == {mine}, asked.reply
        assert set(TICKERS.findall(contents(session))) == {mine}  # user, tool and assistant messages
        assert [m["role"] for m in session["history"]] == ["user", "assistant", "user", "tool", "assistant"]
    assert fakes.quotes.served - served_before == 100 and fakes.llm.refused == 0


def test_runyard_loadtest_passes_against_the_served_example(served: str, capsys: pytest.CaptureFixture[str]) -> None:
    flags = ["--sessions", "100", "--events", "20", "--interval-ms", "10", "--timeout", "120", "--json"]
    assert main(["loadtest", "--url", served, *flags]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["violations_total"] == 0
    assert (report["totals"]["runs_succeeded"], report["totals"]["ticks"]) == (100, 2000)
