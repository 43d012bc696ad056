"""A simulated OpenAI-compatible LLM for the interviewer: ``POST /v1/chat/completions``.

The interviewer's system prompt names a task (``TASK: question``, ``feedback``
or ``summary``) and its user message is the task's data as JSON; the fake
answers each task deterministically from that data alone, so a feedback or a
summary shows exactly which answers it was given:

- question: "Question 2/3 (backend engineer): ..." (the word in the interview's language)
- feedback: JSON ``{"feedback": "...quotes the answer...", "score": 1-5}``
- summary:  the answers quoted with their scores.

    python -m examples.interviewer.fake_llm --port 9201
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

DEFAULT_PORT = 9201
QUESTIONS = (
    "Tell me about a system you built and the hardest trade-off in it.",
    "How would you find out why a service got slow last night?",
    "Describe a time you disagreed with a teammate and what you did.",
    "What would you test first in a feature you have never seen?",
    "How do you decide that something is done?",
)
WORDS = {
    "en": {"question": "Question", "feedback": "Feedback", "summary": "Summary"},
    "fr": {"question": "Question", "feedback": "Retour", "summary": "Bilan"},
    "de": {"question": "Frage", "feedback": "Rückmeldung", "summary": "Zusammenfassung"},
    "es": {"question": "Pregunta", "feedback": "Comentario", "summary": "Resumen"},
}
_TASK = re.compile(r"\bTASK: (\w+)")


def excerpt(text: str, words: int = 8) -> str:
    said = text.split()
    return " ".join(said[:words]) + (" ..." if len(said) > words else "")


def score_of(answer: str) -> int:
    """1 for a one-liner, up to 5 for an answer of 40 words or more."""
    return 1 + min(4, len(answer.split()) // 10)


def answer(task: str, data: dict[str, Any]) -> str:
    words = WORDS.get(str(data.get("language")), WORDS["en"])
    role = data.get("role", "the role")
    if task == "question":
        number = int(data["number"])
        return f"{words['question']} {number}/{data['of']} ({role}): {QUESTIONS[(number - 1) % len(QUESTIONS)]}"
    if task == "feedback":
        said = str(data["answer"])
        score = score_of(said)
        advice = "a concrete example would make it stronger" if score < 3 else "clear, with good depth"
        feedback = f'{words["feedback"]}: you answered "{excerpt(said)}" ({len(said.split())} words); {advice}.'
        return json.dumps({"feedback": feedback, "score": score})
    if task == "summary":
        turns = data["turns"]
        quoted = " ".join(f'Q{t["number"]}: "{excerpt(str(t["answer"]))}" ({t["score"]}/5).' for t in turns)
        return f"{words['summary']} ({role}): {len(turns)} of {data['of']} questions answered. {quoted}"
    return f"I do not know the task {task!r}."


@dataclass
class FakeInterviewerLLM:
    """The endpoint, counting the completions it served."""

    served: int = 0

    async def completions(self, request: Request) -> JSONResponse:
        body = await request.json()
        messages: list[dict[str, Any]] = body["messages"]
        system = next((str(m["content"]) for m in messages if m["role"] == "system"), "")
        task = match[1] if (match := _TASK.search(system)) else "unknown"
        try:
            data = json.loads(messages[-1]["content"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": {"message": "the last message must be the task's JSON"}}, 400)
        self.served += 1
        message = {"role": "assistant", "content": answer(task, data)}
        return JSONResponse(
            {"object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
        )

    def asgi(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self.completions, methods=["POST"])])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A simulated OpenAI-compatible LLM for the interviewer.")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    uvicorn.run(FakeInterviewerLLM().asgi(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
