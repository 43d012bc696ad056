"""A fake OpenAI-compatible ``/v1/chat/completions`` endpoint on loopback.

It replies ``You said: <last user message>`` (streamed word by word when asked
to stream), reports ``usage``, records every request, and can answer the first
``fail`` requests with 429 and ``retry-after-ms``, or break a stream midway."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support import serve_asgi

MODEL = "fake-gpt"


@dataclass
class FakeLLM:
    fail: int = 0  # answer this many requests with 429 first
    retry_after_ms: int = 200
    error: tuple[int, str] | None = None  # answer every request with this status and message
    break_stream_after: int | None = None  # drop the connection after this many chunks
    delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)  # bodies, in order
    headers: list[dict[str, str]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    async def completions(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        self.times.append(time.monotonic())
        if self.fail > 0:
            self.fail -= 1
            headers = {"retry-after-ms": str(self.retry_after_ms)}
            return JSONResponse({"error": {"message": "slow down"}}, 429, headers=headers)
        if self.error is not None:
            status, message = self.error
            return JSONResponse({"error": {"message": message}}, status)
        said = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
        reply = f"You said: {said}"
        usage = {"prompt_tokens": 7 * len(body["messages"]), "completion_tokens": len(reply.split())}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if body.get("stream"):
            include_usage = body.get("stream_options", {}).get("include_usage", False)
            chunks = self._chunks(reply, usage if include_usage else None)
            return StreamingResponse(chunks, media_type="text/event-stream")
        await self._busy()
        choice = {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
        return JSONResponse({"id": "c1", "model": MODEL, "choices": [choice], "usage": usage})

    async def _busy(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1

    async def _chunks(self, reply: str, usage: dict[str, int] | None) -> AsyncIterator[str]:
        await self._busy()
        words = reply.split(" ")
        pieces = [word + " " for word in words[:-1]] + [words[-1]]
        for i, piece in enumerate(pieces):
            if self.break_stream_after is not None and i == self.break_stream_after:
                raise RuntimeError("the fake LLM drops the connection")
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            yield _sse({"id": "c1", "model": MODEL, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        yield _sse({"id": "c1", "model": MODEL, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if usage is not None:
            yield _sse({"id": "c1", "model": MODEL, "choices": [], "usage": usage})
        yield "data: [DONE]\n\n"


def _sse(chunk: dict[str, Any]) -> str:
    return f"data: {json.dumps(chunk)}\n\n"


@contextlib.contextmanager
def serve_fake_llm(llm: FakeLLM) -> Iterator[str]:
    """Serve ``llm``; yields its base URL (``.../v1``)."""
    app = Starlette(routes=[Route("/v1/chat/completions", llm.completions, methods=["POST"])])
    with serve_asgi(app) as url:
        yield f"{url}/v1"
