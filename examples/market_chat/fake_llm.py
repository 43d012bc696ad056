"""A simulated OpenAI-compatible LLM on loopback: ``POST /v1/chat/completions``.

It answers from the messages it is sent, and nothing else, so a reply shows
exactly what the conversation's memory held. Its rules, deterministic:

- "my ticker is XYZ"            -> "Noted: your ticker is XYZ."
- the price or quote of a symbol, or of "my ticker", with the ``get_quote``
  tool offered                  -> a call of ``get_quote({"symbol": ...})``
- a tool result, last           -> "XYZ trades at 123.45 USD (+1.20% today)."
- "what is my ticker?"          -> "Your ticker is XYZ." and the tickers told before it
- anything else                 -> how to use it.

With ``"stream": true`` the reply comes as chat-completion chunks over SSE, a
word at a time. Like a real model it has a context window: a request whose
messages exceed ``CONTEXT_CHARS`` characters is refused (400
``context_length_exceeded``), which is what an untrimmed tool output causes.

    python -m examples.market_chat.fake_llm --port 9101
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

DEFAULT_PORT = 9101
CONTEXT_CHARS = 24_000

_TICKER_IS = re.compile(r"\bmy ticker is ([A-Za-z][A-Za-z0-9.]{0,9})\b", re.IGNORECASE)
_ASKS_PRICE = re.compile(r"\b(?:price|quote)\b", re.IGNORECASE)
_SYMBOL_ASKED = re.compile(r"\b(?:price|quote) (?:of|for) (?!my\b)([A-Za-z][A-Za-z0-9.]{0,9})\b", re.IGNORECASE)
_ASKS_TICKER = re.compile(r"\bwhat(?:'s| is) my ticker\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


def respond(messages: list[dict[str, Any]], tools: list[str]) -> str | ToolCall:
    """The model's answer to ``messages`` when it may call ``tools``."""
    last = messages[-1]
    if last["role"] == "tool":
        return describe_quote(str(last["content"]))
    text = str(last.get("content") or "")
    said = [str(message["content"]) for message in messages if message["role"] == "user"]
    told = [match[1].upper() for message in said for match in _TICKER_IS.finditer(message)]
    if match := _TICKER_IS.search(text):
        return f"Noted: your ticker is {match[1].upper()}."
    if _ASKS_PRICE.search(text):
        if match := _SYMBOL_ASKED.search(text):
            symbol = match[1].upper()
        elif "my ticker" in text.lower() and told:
            symbol = told[-1]
        else:
            return 'Which symbol? Tell me your ticker first ("my ticker is ABC").'
        if "get_quote" not in tools:
            return f"I cannot look up {symbol} without the get_quote tool."
        return ToolCall("get_quote", {"symbol": symbol})
    if _ASKS_TICKER.search(text):
        if not told:
            return "You have not told me your ticker yet."
        before = [ticker for ticker in dict.fromkeys(told) if ticker != told[-1]]
        return f"Your ticker is {told[-1]}." + (f" Before that you told me {', '.join(before)}." if before else "")
    return 'I am a market-data assistant: tell me your ticker ("my ticker is ABC"), then ask me for its price.'


def describe_quote(content: str) -> str:
    try:
        quote = json.loads(content)
        return (
            f"{quote['symbol']} trades at {float(quote['price']):.2f} {quote['currency']}"
            f" ({float(quote['change_pct']):+.2f}% today)."
        )
    except (ValueError, KeyError, TypeError):
        return "The quote service answered something I cannot read."


@dataclass
class FakeLLM:
    """The endpoint, with what it saw: requests, refusals, the largest prompt."""

    token_delay_s: float = 0.002
    requests: int = 0
    refused: int = 0
    largest_prompt_chars: int = 0

    async def completions(self, request: Request) -> Response:
        body = await request.json()
        messages: list[dict[str, Any]] = body["messages"]
        self.requests += 1
        size = sum(len(str(message.get("content") or "")) for message in messages)
        self.largest_prompt_chars = max(self.largest_prompt_chars, size)
        if size > CONTEXT_CHARS:
            self.refused += 1
            error = {
                "message": f"{size} characters of messages; this model's context is {CONTEXT_CHARS}",
                "type": "invalid_request_error",
                "code": "context_length_exceeded",
            }
            return JSONResponse({"error": error}, 400)
        tools = [tool["function"]["name"] for tool in body.get("tools") or []]
        answer = respond(messages, tools)
        if body.get("stream"):
            return StreamingResponse(self._chunks(answer), media_type="text/event-stream")
        return JSONResponse(_completion(answer))

    async def _chunks(self, answer: str | ToolCall) -> AsyncIterator[str]:
        if isinstance(answer, ToolCall):
            yield _sse({"tool_calls": [_tool_call(answer, index=0)]}, "tool_calls")
        else:
            for piece in re.findall(r"\S+\s*", answer):
                yield _sse({"content": piece}, None)
                await asyncio.sleep(self.token_delay_s)
            yield _sse({}, "stop")
        yield "data: [DONE]\n\n"

    def asgi(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self.completions, methods=["POST"])])


def _tool_call(call: ToolCall, **extra: Any) -> dict[str, Any]:
    function = {"name": call.name, "arguments": json.dumps(call.arguments)}
    return {**extra, "id": f"call_{call.name}", "type": "function", "function": function}


def _sse(delta: dict[str, Any], finish_reason: str | None) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    chunk = {"object": "chat.completion.chunk", "choices": [choice]}
    return f"data: {json.dumps(chunk)}\n\n"


def _completion(answer: str | ToolCall) -> dict[str, Any]:
    if isinstance(answer, ToolCall):
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [_tool_call(answer)]}
        finish = "tool_calls"
    else:
        message, finish = {"role": "assistant", "content": answer}, "stop"
    return {"object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": finish}]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A simulated OpenAI-compatible LLM for market_chat.")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    uvicorn.run(FakeLLM().asgi(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
