"""A simulated OpenAI-compatible LLM for the resume_optimizer example, on loopback.

``POST /v1/chat/completions`` answers at once with one JSON object: the system
message names the task (``Task: rewrite``), the user message carries
``name: value`` lines, and the reply follows simple, deterministic rules a
careful human editor would agree with (a bullet without a number lacks a
measurable result; "Responsible for" is a weak opening). The real pipeline's
minutes went into such calls; here the pipeline paces itself instead (see
``RESUME_OPTIMIZER_SECONDS``).

    uvicorn examples.resume_optimizer.fake_llm:app --port 9301
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SKILLS = (
    "Python",
    "PostgreSQL",
    "FastAPI",
    "Kubernetes",
    "Docker",
    "Kafka",
    "Terraform",
    "observability",
    "Redis",
    "AWS",
    "TypeScript",
    "React",
    "Go",
    "Rust",
    "GraphQL",
)
WEAK_OPENINGS = (
    "responsible for",
    "worked on",
    "helped with",
    "helped",
    "was involved in",
    "assisted with",
    "maintained",
)
STRONG_VERBS = ("Led", "Owned", "Drove")
DEGREES = ("bsc", "msc", "phd", "ba ", "ma ", "bachelor", "master")
_TASK = re.compile(r"^Task: (\w+)", re.MULTILINE)
_FIELD = re.compile(r"^(\w+): (.*)$", re.MULTILINE)


@dataclass
class FakeLLM:
    """The fake, counting the calls it answered, in all and by task."""

    calls: int = 0
    tasks: Counter[str] = field(default_factory=Counter)

    async def completions(self, request: Request) -> JSONResponse:
        body = await request.json()
        system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
        task = match.group(1) if (match := _TASK.search(system)) else "chat"
        self.calls += 1
        self.tasks[task] += 1
        content = json.dumps(answer(task, dict(_FIELD.findall(body["messages"][-1]["content"]))))
        message = {"role": "assistant", "content": content}
        return JSONResponse({"object": "chat.completion", "choices": [{"index": 0, "message": message}]})

    def asgi(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self.completions, methods=["POST"])])


def _number(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def answer(task: str, f: dict[str, str]) -> dict[str, Any]:
    if task == "keywords":
        job = f.get("job", "")
        return {"keywords": [skill for skill in SKILLS if re.search(rf"\b{re.escape(skill)}\b", job, re.I)][:8]}
    if task == "critique":
        bullet = f.get("bullet", "")
        issues: list[str] = []
        if bullet.lower().startswith(DEGREES):
            return {"issues": issues}
        if bullet.lower().startswith(WEAK_OPENINGS):
            issues.append("weak opening verb")
        if not re.search(r"\d", bullet):
            issues.append("no measurable result")
        if len(bullet) > 160:
            issues.append("too long")
        return {"issues": issues}
    if task == "rewrite":
        bullet, found = f.get("bullet", ""), f.get("issues", "")
        text = bullet
        if "weak opening verb" in found:
            rest = next((bullet[len(w) :].strip() for w in WEAK_OPENINGS if bullet.lower().startswith(w)), bullet)
            text = f"{STRONG_VERBS[_number(bullet) % len(STRONG_VERBS)]} {rest}"
        if "no measurable result" in found:
            text = f"{text} [add a number: how much, how many, how often?]"
        return {"text": text}
    if task == "tailor":
        keyword, resume = f.get("keyword", ""), f.get("resume", "")
        if re.search(rf"\b{re.escape(keyword)}\b", resume, re.I):
            return {"add": False, "suggestion": f"{keyword} is already there."}
        return {"add": True, "suggestion": f"Add {keyword} to your skills, with a line on where you used it."}
    if task == "summary":
        return {
            "summary": f"Your resume now covers {f.get('after')}% of the posting's keywords (it covered "
            f"{f.get('before')}%). {f.get('rewritten')} bullets were rewritten to open with a strong verb "
            f"and show a result; add the missing skills only where they are true."
        }
    return {"text": f"I was asked to {task}."}


app = FakeLLM().asgi()
