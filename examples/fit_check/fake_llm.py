"""A simulated OpenAI-compatible LLM for the fit_check example, on loopback.

``POST /v1/chat/completions`` answers after ``delay_s`` with one JSON object, as a
model asked for JSON output would. The system message names the task
(``Task: match``) and the user message carries ``Name: value`` lines; the reply is
derived from them deterministically, so runs are reproducible and a user's
marker (a candidate's name, a topic) shows up in that user's thoughts only.

Every call is recorded (when, for which ``user``, with which fields) so that the
tests can see exactly when calls stop.

    uvicorn examples.fit_check.fake_llm:app --port 9101
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SKILLS = ("python", "postgres", "kubernetes", "asyncio", "react", "terraform", "kafka", "rust", "go", "aws")
_TASK = re.compile(r"^Task: (\w+)", re.MULTILINE)
_FIELD = re.compile(r"^(\w+): (.*)$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Call:
    at: float  # time.monotonic() when the call arrived
    user: str
    task: str
    fields: dict[str, str]


@dataclass
class FakeLLM:
    delay_s: float = 0.02
    calls: list[Call] = field(default_factory=list)
    in_flight: int = 0

    def calls_for(self, user: str) -> list[Call]:
        return [call for call in self.calls if call.user == user]

    async def completions(self, request: Request) -> JSONResponse:
        body = await request.json()
        system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
        prompt = body["messages"][-1]["content"]
        task_match = _TASK.search(system)
        task = task_match.group(1) if task_match else "chat"
        fields = dict(_FIELD.findall(prompt))
        self.calls.append(Call(time.monotonic(), str(body.get("user", "")), task, fields))
        self.in_flight += 1
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        content = json.dumps(answer(task, fields))
        return JSONResponse(
            {
                "id": f"chatcmpl-{len(self.calls)}",
                "object": "chat.completion",
                "model": body.get("model", "fake"),
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(content) // 4},
            }
        )

    def asgi(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self.completions, methods=["POST"])])


def _number(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def answer(task: str, f: dict[str, str]) -> dict[str, Any]:
    """What the "model" says to ``task`` given the prompt's fields."""
    if task == "plan":
        company, role = f.get("company", "?"), f.get("role", "?")
        return {
            "thought": f"To judge a fit for {role} at {company}, I will read the posting, the team and its stack.",
            "queries": [f"{company} {role} job posting", f"{company} engineering team", f"{role} skills in demand"],
        }
    if task == "requirements":
        role = f.get("role", "?")
        start = _number(role) % len(SKILLS)
        picked = [SKILLS[(start + 3 * step) % len(SKILLS)] for step in range(4)]
        return {"thought": f"The sources on {role} keep asking for {', '.join(picked)}.", "requirements": picked}
    if task == "match":
        candidate, requirement = f.get("candidate", "?"), f.get("requirement", "?")
        skills = {s.strip().lower() for s in f.get("skills", "").split(",")}
        has = requirement.lower() in skills
        score = 80 + _number(candidate + requirement) % 20 if has else 15 + _number(candidate + requirement) % 30
        verb = "lists" if has else "does not list"
        return {"thought": f"{candidate} {verb} {requirement}; I would rate it {score}/100.", "score": score}
    if task == "verdict":
        candidate, role = f.get("candidate", "?"), f.get("role", "?")
        summary = (
            f"{candidate} is a {f.get('verdict', '?')} for {role} (score {f.get('score', '?')}/100). "
            f"Strongest on: {f.get('strengths') or 'nothing yet'}. To work on: {f.get('gaps') or 'nothing'}."
        )
        return {"summary": summary}
    if task == "queries":
        topic, round_ = f.get("topic", "?"), f.get("round", "1")
        angles = ("history", "open problems", "recent results", "tooling", "criticism", "adoption")
        start = _number(topic + round_) % len(angles)
        queries = [f"{topic} {angles[(start + step) % len(angles)]}" for step in range(2)]
        return {
            "thought": f"Round {round_} on {topic}: next I will look into {queries[0]} and {queries[1]}.",
            "queries": queries,
        }
    if task == "report":
        topic = f.get("topic", "?")
        return {"report": f"{topic}: {f.get('findings', 'no findings')}. The evidence on {topic} is still settling."}
    return {"thought": f"I was asked to {task}."}


app = FakeLLM().asgi()
