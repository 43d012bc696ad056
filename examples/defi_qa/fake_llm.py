"""A simulated OpenAI-compatible LLM for the defi_qa example, on loopback.

``POST /v1/chat/completions`` with ``"stream": true`` answers as OpenAI does, in
server-sent ``chat.completion.chunk`` deltas ending with ``data: [DONE]``. The
answer is built from the ``[Fxx] ...`` context lines of the prompt, so it is
deterministic and quotes only the facts the run retrieved. Every question asked
is recorded, which is how the tests count LLM calls.

    uvicorn examples.defi_qa.fake_llm:app --port 9201
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

_QUESTION = re.compile(r"^Question: (.*)$", re.MULTILINE)
_FACT = re.compile(r"^\[(F\d+)\] (.*)$", re.MULTILINE)


def compose(facts: list[tuple[str, str]]) -> str:
    """The "model's" answer: the two best facts, then the sources it used."""
    if not facts:
        return "I have no context to answer from."
    used = facts[:2]
    body = " ".join(text for _, text in used)
    return f"{body} (sources: {', '.join(fact_id for fact_id, _ in used)})"


@dataclass
class FakeLLM:
    first_token_delay_s: float = 0.02
    token_delay_s: float = 0.002
    questions: list[str] = field(default_factory=list)

    async def completions(self, request: Request) -> Response:
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        question = _QUESTION.search(prompt)
        self.questions.append(question.group(1) if question else prompt)
        text = compose(_FACT.findall(prompt))
        if not body.get("stream"):
            await asyncio.sleep(self.first_token_delay_s)
            message = {"role": "assistant", "content": text}
            return JSONResponse({"object": "chat.completion", "choices": [{"index": 0, "message": message}]})
        return StreamingResponse(self._chunks(text), media_type="text/event-stream")

    async def _chunks(self, text: str) -> AsyncIterator[bytes]:
        await asyncio.sleep(self.first_token_delay_s)
        for piece in re.findall(r"\S+\s*", text):
            chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": piece}}]}
            yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
            await asyncio.sleep(self.token_delay_s)
        yield b"data: [DONE]\n\n"

    def asgi(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self.completions, methods=["POST"])])


app = FakeLLM().asgi()
