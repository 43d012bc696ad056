"""``approval``: a draft that a person approves or edits before it goes out.

It shows runyard's durable work in four moves: the draft is written in a
``ctx.step`` (recorded once, never written again however often the run
executes), ``ctx.ask`` waits for a person without holding a worker (the run is
``waiting`` until ``POST /v1/runs/{id}/input`` answers), ``ctx.sleep`` waits
on a durable timer (any worker picks the run up when it is over, across
restarts), and the run finishes with the text the person settled on.

Nothing here touches the network: the "writer" derives its sentences from a
hash of the topic, so a topic always gets the same draft, and streams it word
by word at a pace ``RUNYARD_DEMO_SPEED`` scales (0 removes every delay and
shortens the sleep to nothing, which is what the tests do).
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from runyard import RunContext
from runyard.demo.research import pause

QUESTION = "Approve this draft, or edit it?"
MAX_TEXT = 2000
PUBLISH_DELAY_S = 2.0  # the "cool-off" before the text goes out: a durable timer

_OPENINGS = (
    "Here is where things stand on {topic}.",
    "A short note on {topic}.",
    "Quick update: {topic}.",
)
_MIDDLES = (
    "The plan is settled and the first steps are already under way.",
    "Most of the open questions were answered this week.",
    "We kept the scope small so that it ships on time.",
    "Feedback so far has been positive, with two points still to check.",
)
_CLOSINGS = (
    "Reply if anything looks off.",
    "More details follow next week.",
    "Thanks to everyone who helped.",
)


class ApprovalInput(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=True)

    topic: str = Field("the team offsite", min_length=1, max_length=200, description="What the draft is about")


class Review(BaseModel):
    """The person's answer: approve the draft as it is, or give the text to use instead."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    approve: bool = Field(description="Keep the draft as it is")
    edited: str | None = Field(None, min_length=1, max_length=MAX_TEXT, description="Your text, used instead")


def write_draft(topic: str) -> str:
    """The draft for ``topic``: three sentences picked by a hash of it."""
    digest = hashlib.sha256(topic.encode()).digest()
    opening = _OPENINGS[digest[0] % len(_OPENINGS)].format(topic=topic)
    middle = _MIDDLES[digest[1] % len(_MIDDLES)]
    closing = _CLOSINGS[digest[2] % len(_CLOSINGS)]
    return f"{opening} {middle} {closing}"


async def stream_draft(ctx: RunContext, topic: str) -> str:
    """Write the draft, streaming it as ``token`` events: the body of the ``draft`` step."""
    draft = write_draft(topic)
    for piece in re.findall(r"\S+\s*", draft):
        await ctx.token(piece)
        await pause(0.05)
    return draft


def decide(draft: str, review: Review) -> tuple[str, str | None]:
    """The decision (``edited``, ``approved`` or ``rejected``) and the text that goes out."""
    if review.edited is not None:
        return "edited", review.edited
    if review.approve:
        return "approved", draft
    return "rejected", None


def publish_delay_s() -> float:
    """``PUBLISH_DELAY_S`` scaled by ``RUNYARD_DEMO_SPEED`` (as every demo delay is)."""
    try:
        scale = float(os.environ.get("RUNYARD_DEMO_SPEED", "1"))
    except ValueError:
        scale = 1.0
    return PUBLISH_DELAY_S * max(scale, 0.0)


async def approval(ctx: RunContext, input: ApprovalInput) -> dict[str, Any]:
    """Draft a short text (a recorded step streaming `token` events), ask a person to
    approve or edit it (the run waits, without a worker, for POST /v1/runs/{id}/input
    with {"approve": bool, "edited"?: str}), wait 2 s on a durable timer, then finish.
    Emits `phase` and `decision` events. Output {topic, draft, decision, text}."""
    await ctx.phase("draft", "started")
    draft: str = await ctx.step("draft", stream_draft, ctx, input.topic)
    await ctx.phase("draft", "done", words=len(draft.split()))

    review: Review = await ctx.ask({"draft": draft, "question": QUESTION}, schema=Review)
    decision, text = decide(draft, review)
    await ctx.emit("decision", {"decision": decision, "text": text})

    await ctx.phase("publish", "started")
    await ctx.sleep(publish_delay_s())
    await ctx.phase("publish", "done")
    return {"topic": input.topic, "draft": draft, "decision": decision, "text": text}
