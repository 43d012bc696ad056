"""``chat``: a conversation that lives in the session's memory.

With an LLM endpoint configured (``RUNYARD_LLM_BASE_URL``, ``--llm-base-url``),
replies come from that OpenAI-compatible endpoint through
``runyard.adapters.openai.ChatClient``, under the demo's ``llm`` limit (its
concurrency cap, retries honouring ``Retry-After``, a ``usage`` event);
otherwise from a deterministic offline responder that visibly uses the history
(it counts turns, recalls earlier messages and remembers your name).
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from runyard import RunContext, Runyard, Settings
from runyard.adapters.openai import ChatClient
from runyard.demo.research import pause

SYSTEM_PROMPT = "You are the assistant of the runyard demo. Answer briefly."
LLM_TIMEOUT_S = 60.0
LLM_LIMIT = "llm"
LLM_CONCURRENCY = 8  # replies in flight at once, across every session of the demo

_NAME = re.compile(r"\b(?:my name is|call me)\s+([^\W\d_][\w'-]*)", re.IGNORECASE)
_ASKS_NAME = re.compile(r"\b(?:what(?:'s| is) my name|who am i)\b", re.IGNORECASE)
_ASKS_RECALL = re.compile(r"\b(?:what did i (?:say|tell you)|what have i (?:said|told you))\b", re.IGNORECASE)


class ChatInput(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=True)

    message: str = Field(min_length=1, max_length=4000, description="The user's message")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """The OpenAI-compatible endpoint the replies come from."""

    base_url: str
    model: str
    api_key: str | None = None


def for_app(app: Runyard) -> Callable[[RunContext, ChatInput], Awaitable[dict[str, Any]]]:
    """The ``chat`` pipeline of ``app``: it reads the app's LLM settings when a
    run starts, so settings given after registration (the CLI's) are the ones used."""

    async def chat(ctx: RunContext, input: ChatInput) -> dict[str, Any]:
        """A chat turn in the session's memory: run it again in the same session and it
        remembers. Streams the reply as `token` events. Output {reply, turns}."""
        return await chat_turn(ctx, input, llm_endpoint(app.settings))

    return chat


async def chat_turn(ctx: RunContext, input: ChatInput, endpoint: Endpoint | None) -> dict[str, Any]:
    """One turn: the reply of ``endpoint``, or of the offline responder without one."""
    history = [
        {"role": str(m["role"]), "content": str(m["content"])}
        for m in await ctx.memory.history()
        if m.get("role") in ("user", "assistant")
    ]
    await ctx.memory.append("user", input.message)
    messages = [*history, {"role": "user", "content": input.message}]

    reply = await llm_reply(ctx, endpoint, messages) if endpoint is not None else offline_reply(messages)

    for piece in re.findall(r"\S+\s*|\s+", reply):
        await ctx.token(piece)
        await pause(0.03)
    await ctx.memory.append("assistant", reply)
    return {"reply": reply, "turns": sum(1 for m in messages if m["role"] == "user")}


def llm_endpoint(settings: Settings) -> Endpoint | None:
    """The endpoint the settings name, or None for the offline responder.

    The app's settings when they name one; else the environment as it is now,
    for an app whose settings were made before the variable was set (the
    module-level demo ``app``, imported by a program that sets it later)."""
    if settings.llm_base_url:
        return Endpoint(settings.llm_base_url, settings.llm_model, settings.llm_api_key)
    if base_url := os.environ.get("RUNYARD_LLM_BASE_URL"):
        model = os.environ.get("RUNYARD_LLM_MODEL") or settings.llm_model
        return Endpoint(base_url, model, os.environ.get("RUNYARD_LLM_API_KEY"))
    return None


async def llm_reply(ctx: RunContext, endpoint: Endpoint, messages: list[dict[str, str]]) -> str:
    """One non-streaming completion from the endpoint, under the ``llm`` limit."""
    client = ChatClient(
        endpoint.base_url, model=endpoint.model, api_key=endpoint.api_key, limit=LLM_LIMIT, timeout_s=LLM_TIMEOUT_S
    )
    async with client:
        completion = await client.complete(ctx, [{"role": "system", "content": SYSTEM_PROMPT}, *messages])
    return completion.text


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
