"""market_chat: a market-data chatbot with a memory per conversation.

Each conversation is a runyard session; each message a ``chat`` run in it:

    POST /v1/runs {"pipeline": "chat", "input": {"message": "my ticker is ACME"}}
    POST /v1/runs {"pipeline": "chat", "input": {"message": "what is the price of my ticker?"},
                   "session_id": "<the first run's session_id>"}

The reply streams as ``token`` events from an OpenAI-compatible LLM
(``MARKET_CHAT_LLM_URL``), which may call ``get_quote`` on the market-data API
(``MARKET_CHAT_QUOTES_URL``). The conversation's memory is the session's:

- bounded: the store keeps the newest ``RUNYARD_HISTORY_MAX`` messages, and the
  model is sent the newest that fit in ``PROMPT_CHARS``;
- trimmed: a tool's output enters memory (and the prompt) as ``trim_tool_output``
  leaves it, never its 60 KB;
- expiring: a conversation idle for ``RUNYARD_SESSION_TTL_S`` is forgotten.

``ticker`` (runyard's demo pipeline) is served too, for ``runyard loadtest``.

    runyard serve examples.market_chat.app:app     # with the fakes running, see README.md
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from runyard import Breaker, RunContext, Runyard, Settings
from runyard.demo.ticker import TickerInput, ticker

LLM_LIMIT = "llm"
QUOTES_LIMIT = "market-data"
PROMPT_CHARS = 12_000  # the newest memory that fits in this is sent to the model
MAX_TOOL_CHARS = 2_000  # the most of one tool output that enters memory and the prompt
KEEP_ITEMS = 5  # items kept of each list in a tool output: the newest
MAX_MESSAGE_CHARS = 2_000
SYSTEM_PROMPT = "You are a market-data assistant. Use get_quote for prices. Answer in one sentence."
SYMBOL = re.compile(r"[A-Z][A-Z0-9.]{0,9}")
QUOTE_TOOL = {
    "type": "function",
    "function": {
        "name": "get_quote",
        "description": "Today's quote of a stock symbol",
        "parameters": {"type": "object", "properties": {"symbol": {"type": "string"}}, "required": ["symbol"]},
    },
}


@dataclass(frozen=True, slots=True)
class Services:
    """Where the external services are: the fakes on loopback by default."""

    llm_url: str = "http://127.0.0.1:9101/v1"
    quotes_url: str = "http://127.0.0.1:9102"
    llm_model: str = "market-chat-sim"
    llm_api_key: str | None = None

    @classmethod
    def from_env(cls) -> Services:
        env = os.environ.get
        default = cls()
        return cls(
            llm_url=env("MARKET_CHAT_LLM_URL", default.llm_url),
            quotes_url=env("MARKET_CHAT_QUOTES_URL", default.quotes_url),
            llm_model=env("MARKET_CHAT_LLM_MODEL", default.llm_model),
            llm_api_key=env("MARKET_CHAT_LLM_API_KEY"),
        )


class ChatInput(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS, description="The user's message")


def build_app(settings: Settings | None = None, services: Services | None = None) -> Runyard:
    """The app on ``settings`` (default: the ``RUNYARD_*`` environment), calling ``services``."""
    where = services or Services.from_env()
    app = Runyard(settings, title="market_chat")
    app.limit(LLM_LIMIT, concurrency=64)
    app.limit(QUOTES_LIMIT, concurrency=10, breaker=Breaker(failures=5, reset_s=30))
    app.pipeline("ticker", input_model=TickerInput)(ticker)

    @app.pipeline("chat", timeout_s=120, input_model=ChatInput)
    async def chat(ctx: RunContext, input: ChatInput) -> dict[str, Any]:
        """One message of a conversation (the session): the reply streams as `token`
        events; the turn enters the session's memory once it succeeded. Output {reply, quoted}."""
        history = await ctx.memory.history()
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            *recent(prompt_of(history), PROMPT_CHARS),
            {"role": "user", "content": input.message},
        ]
        turn: list[tuple[str, Any, dict[str, Any]]] = [("user", input.message, {})]
        quoted: list[str] = []
        async with httpx.AsyncClient(timeout=30) as http:
            llm = LLM(ctx, http, where)
            reply, calls = await llm.complete(messages, tools=[QUOTE_TOOL])
            for call in calls:
                symbol, result = await get_quote(ctx, http, where.quotes_url, call)
                quoted.append(symbol)
                turn.append(("tool", result, {"name": "get_quote", "symbol": symbol}))
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": json.dumps(result)})
            if calls:
                reply, _ = await llm.complete(messages)
        turn.append(("assistant", reply, {}))
        for role, content, extra in turn:
            await ctx.memory.append(role, content, **extra)
        return {"reply": reply, "quoted": quoted}

    return app


class LLM:
    """The chat-completions endpoint, as one run streams from it."""

    def __init__(self, ctx: RunContext, http: httpx.AsyncClient, services: Services) -> None:
        self._ctx, self._http, self._services = ctx, http, services

    async def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> tuple[str, list[dict[str, Any]]]:
        """The reply, streamed to the run as `token` events, and the tool calls asked for.

        ``ctx.limit`` rather than ``ctx.call``: tokens already streamed to the user
        cannot be taken back, so a failed stream is not retried behind their back."""
        body: dict[str, Any] = {"model": self._services.llm_model, "messages": messages, "stream": True}
        if tools:
            body["tools"] = tools
        headers = {"Authorization": f"Bearer {self._services.llm_api_key}"} if self._services.llm_api_key else {}
        url = f"{self._services.llm_url.rstrip('/')}/chat/completions"
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        async with self._ctx.limit(LLM_LIMIT), self._http.stream("POST", url, json=body, headers=headers) as response:
            if response.is_error:
                await response.aread()
                response.raise_for_status()
            async for line in response.aiter_lines():
                data = line.removeprefix("data: ")
                if data == line or data == "[DONE]":
                    continue
                delta = json.loads(data)["choices"][0]["delta"]
                if piece := delta.get("content"):
                    text.append(piece)
                    await self._ctx.token(piece)
                for part in delta.get("tool_calls") or []:
                    _merge_tool_call(calls.setdefault(part.get("index", 0), {}), part)
        return "".join(text), [calls[index] for index in sorted(calls)]


def _merge_tool_call(call: dict[str, Any], part: dict[str, Any]) -> None:
    """Add a streamed piece of a tool call (its arguments may come in many)."""
    call.setdefault("type", "function")
    call["id"] = part.get("id") or call.get("id", "")
    function = call.setdefault("function", {"name": "", "arguments": ""})
    function["name"] += (part.get("function") or {}).get("name") or ""
    function["arguments"] += (part.get("function") or {}).get("arguments") or ""


async def get_quote(
    ctx: RunContext, http: httpx.AsyncClient, base_url: str, call: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """Run the model's ``get_quote`` call: the symbol and the trimmed quote (or an error
    the model can read)."""
    try:
        symbol = str(json.loads(call["function"]["arguments"])["symbol"]).upper()
    except (ValueError, KeyError, TypeError):
        return "", {"error": 'get_quote needs {"symbol": ...}'}
    if call["function"]["name"] != "get_quote" or not SYMBOL.fullmatch(symbol):
        return symbol, {"error": f"no such tool call: {call['function']['name']}({symbol})"}

    async def fetch() -> dict[str, Any]:
        response = await http.get(f"{base_url.rstrip('/')}/v1/quotes/{symbol}")
        response.raise_for_status()
        quote: dict[str, Any] = response.json()
        return quote

    await ctx.phase("quote", "started", symbol=symbol)
    quote = await ctx.call(QUOTES_LIMIT, fetch, retries=3)
    kept = trim_tool_output(quote)
    await ctx.phase("quote", "done", symbol=symbol, chars=json_size(quote), kept_chars=json_size(kept))
    return symbol, kept


def trim_tool_output(output: dict[str, Any], max_chars: int = MAX_TOOL_CHARS, keep: int = KEEP_ITEMS) -> dict[str, Any]:
    """What of a tool's output enters memory and the prompt: every other field, the
    last ``keep`` items of each list, and ``omitted`` (items left out, by field);
    then whole fields, largest first, until its JSON fits in ``max_chars``."""
    kept: dict[str, Any] = {}
    omitted: dict[str, int] = {}
    for key, value in output.items():
        if isinstance(value, list) and len(value) > keep:
            kept[key], omitted[key] = value[-keep:], len(value) - keep
        else:
            kept[key] = value
    while json_size(trimmed := {**kept, "omitted": omitted}) > max_chars and kept:
        largest = max(kept, key=lambda key: json_size(kept[key]))
        del kept[largest]
        value = output[largest]
        omitted[largest] = len(value) if isinstance(value, list) else 1
    if json_size(trimmed) > max_chars:
        return {"error": "the tool's output was too large to keep", "chars": json_size(output)}
    return trimmed if omitted else kept


def json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")))


def prompt_of(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The memory as chat messages; an earlier turn's tool output as a note."""
    messages = []
    for message in history:
        if message["role"] in ("user", "assistant"):
            messages.append({"role": message["role"], "content": str(message["content"])})
        elif message["role"] == "tool":
            note = f"Earlier result of {message.get('name', 'a tool')}: {json.dumps(message['content'])}"
            messages.append({"role": "system", "content": note})
    return messages


def recent(messages: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """The newest ``messages`` whose contents fit in ``budget`` characters, oldest first."""
    picked: list[dict[str, Any]] = []
    for message in reversed(messages):
        budget -= len(message["content"])
        if budget < 0:
            break
        picked.append(message)
    return picked[::-1]


app = build_app()
