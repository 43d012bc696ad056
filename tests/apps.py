"""The app the tests serve: the demo's pipelines plus a few that misbehave on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from pydantic import BaseModel, ConfigDict

from runyard import RunContext, Runyard, Settings, current_run
from runyard.demo import register_demo_pipelines
from tests.durable.app import register_durable_pipelines


class Nap(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = 10.0
    marker: str = ""


def build_app(settings: Settings) -> Runyard:
    app = Runyard(settings)
    register_demo_pipelines(app)
    register_durable_pipelines(app)
    app.limit("test-api", concurrency=1)

    @app.pipeline("nap", input_model=Nap)
    async def nap(ctx: RunContext, input: Nap) -> dict[str, Any]:
        """Emit ``napping``, sleep, emit ``woke``."""
        await ctx.emit("napping", {"marker": input.marker})
        await asyncio.sleep(input.seconds)
        await ctx.emit("woke", {"marker": input.marker})
        return {"slept": input.seconds}

    @app.pipeline("nap_retry", input_model=Nap, retries=1)
    async def nap_retry(ctx: RunContext, input: Nap) -> dict[str, Any]:
        """``nap`` whose pipeline allows one retry after a lost worker."""
        await ctx.emit("napping", {"attempt": ctx.attempt})
        await asyncio.sleep(input.seconds)
        return {"attempt": ctx.attempt}

    @app.pipeline("nap_short", input_model=Nap, timeout_s=0.3)
    async def nap_short(ctx: RunContext, input: Nap) -> None:
        """Sleeps past its 0.3 s timeout."""
        await ctx.emit("napping", {})
        await asyncio.sleep(input.seconds)

    @app.pipeline("boom")
    async def boom(ctx: RunContext, input: Any) -> None:
        """Fails with a message that must reach the client without a traceback."""
        await ctx.emit("about_to_fail", {})
        raise ValueError("the flux capacitor is out of flux")

    @app.pipeline("stubborn")
    async def stubborn(ctx: RunContext, input: Any) -> str:
        """Swallows its cancellation and returns anyway."""
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return "ignored the cancel"
        return "slept"

    @app.pipeline("deaf")
    async def deaf(ctx: RunContext, input: Any) -> None:
        """Swallows every cancellation and goes on for ever (issue 10)."""
        while True:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.05)

    @app.pipeline("chatty")
    async def chatty(ctx: RunContext, input: Any) -> None:
        """Writes a line with the standard ``logging`` module, as any pipeline may."""
        logging.getLogger("user.pipeline").warning("thinking about %s", input)

    @app.pipeline("recall")
    async def recall(ctx: RunContext, input: Any) -> dict[str, Any]:
        """Reads an item of the run's owner's long-term store and writes one back (``ctx.store``)."""
        item = await ctx.store.get(input["namespace"], input["key"])
        await ctx.store.put(input["namespace"], "seen", {"by": ctx.run_id})
        return {"item": item}

    @app.pipeline("whoami")
    async def whoami(ctx: RunContext, input: Any) -> dict[str, Any]:
        """Reports the run as seen through ``current_run()`` from a nested helper."""
        await asyncio.sleep(0.01)
        return await _deep_tool()

    @app.pipeline("remember")
    async def remember(ctx: RunContext, input: Any) -> dict[str, Any]:
        """Appends ``input['note']`` to the session's memory and returns the history."""
        await ctx.memory.append("user", input["note"], marker=input.get("marker"))
        return {"history": await ctx.memory.history()}

    @app.pipeline("limited")
    async def limited(ctx: RunContext, input: Any) -> dict[str, Any]:
        """Holds the single ``test-api`` permit for ``input['hold']`` seconds."""
        async with ctx.limit("test-api"):
            await ctx.emit("got_permit", {})
            await asyncio.sleep(float(input.get("hold", 0.1)))
            await ctx.emit("releasing", {})
        return {"owner": ctx.owner, "pid": os.getpid()}

    @app.pipeline("approve")
    async def approve(ctx: RunContext, input: Any) -> dict[str, Any]:
        """Asks ``input['question']`` with a JSON Schema, then returns the answer."""
        schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
        answer = await ctx.ask({"question": (input or {}).get("question", "ok?")}, schema=schema)
        await ctx.emit("answer", answer)
        return {"answer": answer}

    return app


async def _deep_tool() -> dict[str, Any]:
    ctx = current_run()
    return {"run_id": ctx.run_id, "session_id": ctx.session_id, "owner": ctx.owner}


app = build_app(Settings())
