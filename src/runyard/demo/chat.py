"""``chat``: a conversation that lives in the session's memory.

With ``RUNYARD_LLM_BASE_URL`` set, replies come from that OpenAI-compatible
endpoint; otherwise from a deterministic offline responder that visibly uses the
history (it counts turns, recalls earlier messages and remembers your name).
"""

from __future__ import annotations

import os
import re
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from runyard import RunContext
from runyard.demo.research import pause

SYSTEM_PROMPT = "You are the assistant of the runyard demo. Answer briefly."
LLM_TIMEOUT_S = 60.0

_NAME = re.compile(r"\b(?:my name is|call me)\s+([^\W\d_][\w'-]*)", re.IGNORECASE)
_ASKS_NAME = re.compile(r"\b(?:what(?:'s| is) my name|who am i)\b", re.IGNORECASE)
_ASKS_RECALL = re.compile(r"\b(?:what did i (?:say|tell you)|what have i (?:said|told you))\b", re.IGNORECASE)


class ChatInput(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=True)

    message: str = Field(min_length=1, max_length=4000, description="The user's message")


async def chat(ctx: RunContext, input: ChatInput) -> dict[str, Any]:
    """A chat turn in the session's memory: run it again in the same session and it
    remembers. Streams the reply as `token` events. Output {reply, turns}."""
    history = [
        {"role": str(m["role"]), "content": str(m["content"])}
        for m in await ctx.memory.history()
        if m.get("role") in ("user", "assistant")
    ]
    await ctx.memory.append("user", input.message)
    messages = [*history, {"role": "user", "content": input.message}]

    # The context has no settings yet, so the endpoint comes from the environment
    # (the same variable Settings.llm_base_url reads).
    base_url = os.environ.get("RUNYARD_LLM_BASE_URL")
    reply = await llm_reply(base_url, messages) if base_url else offline_reply(messages)

    for piece in re.findall(r"\S+\s*|\s+", reply):
        await ctx.token(piece)
        await pause(0.03)
    await ctx.memory.append("assistant", reply)
    return {"reply": reply, "turns": sum(1 for m in messages if m["role"] == "user")}


async def llm_reply(base_url: str, messages: list[dict[str, str]]) -> str:
    """One non-streaming completion from an OpenAI-compatible ``/chat/completions``."""
    headers = {}
    if api_key := os.environ.get("RUNYARD_LLM_API_KEY"):
        headers["Authorization"] = f"Bearer {api_key}"
    body = {
        "model": os.environ.get("RUNYARD_LLM_MODEL", "gpt-4o-mini"),
        "messages": [{"role": "system", "content": SYSTEM_PROMPT}, *messages],
        "stream": False,
    }
    async with httpx.AsyncClient(timeout=LLM_TIMEOUT_S) as client:
        response = await client.post(f"{base_url.rstrip('/')}/chat/completions", json=body, headers=headers)
        response.raise_for_status()
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise RuntimeError(f"the LLM endpoint answered without a reply: {response.text[:200]!r}") from exc
    return str(content)


def offline_reply(messages: list[dict[str, str]]) -> str:
    """A deterministic reply to the last message, built from the whole conversation."""
    said = [m["content"] for m in messages if m["role"] == "user"]
    message, earlier = said[-1], said[:-1]
    names = [match.group(1) for text in said if (match := _NAME.search(text))]

    if match := _NAME.search(message):
        return f"Nice to meet you, {match.group(1)}! I will remember that."
    if _ASKS_NAME.search(message):
        return f"Your name is {names[-1]}." if names else "You have not told me your name yet."
    if _ASKS_RECALL.search(message):
        if not earlier:
            return "This is our first exchange: you have not said anything else yet."
        quoted = "; ".join(f'"{text}"' for text in earlier[-5:])
        return f"Before this, you said: {quoted}."
    if not earlier:
        return (
            f'You said: "{message}". I am the offline demo responder. Tell me your name, '
            "then ask me what it is, or what you said before."
        )
    return f'You said: "{message}". That is turn {len(said)}; before that you said "{earlier[-1]}".'
