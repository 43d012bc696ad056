"""Pipelines whose runs the trace specs look at: phases, token usage, a durable
step, a governed call that is refused once, a question, a failure, a run
long enough to be handed back by a drain, calls to a model endpoint, and a run
created on another runyard.

``runyard serve tests.tracing.app:app`` serves them, configured by RUNYARD_*
(and OTEL_*) variables."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from runyard import RunContext, Runyard, Settings
from runyard.adapters.openai import ChatClient
from runyard.client import AsyncClient

LINGER = {"s": 60.0}  # how long ``lingering`` waits after its step (a spec shortens it for the next execution)
BUSY = httpx.Response(503, headers={"retry-after-ms": "1"}, request=httpx.Request("POST", "http://api.invalid/"))


def build_traced_app(settings: Settings) -> Runyard:
    app = Runyard(settings)
    app.limit("api", concurrency=2)
    app.limit("llm", concurrency=4)
    refused: set[str] = set()  # runs whose first call was refused (so each run's call takes two attempts)

    async def answer(run_id: str) -> str:
        if run_id not in refused:
            refused.add(run_id)
            raise httpx.HTTPStatusError("busy", request=BUSY.request, response=BUSY)
        return "answered"

    @app.pipeline("traced")
    async def traced(ctx: RunContext, input: Any) -> dict[str, Any]:
        """A phase, a step, a call (two attempts), usage twice; with ``ask``, a question between."""
        options = input or {}
        await ctx.phase("fetch")
        fetched = await ctx.step("fetch", lambda: {"rows": 3})
        await ctx.emit("usage", {"input_tokens": 10, "output_tokens": 3, "model": "m"})
        if options.get("ask"):
            await ctx.ask("go on?")
        called = await ctx.call("api", answer, ctx.run_id, retries=2)
        async with ctx.limit("api"):
            await ctx.emit("usage", {"input_tokens": 5, "output_tokens": 4})
        await ctx.phase("fetch", "done")
        return {"fetched": fetched, "called": called}

    @app.pipeline("broken")
    async def broken(ctx: RunContext, input: Any) -> None:
        raise ValueError("the model said no")

    @app.pipeline("lingering", retries=1)
    async def lingering(ctx: RunContext, input: Any) -> str:
        """A step, then (in its first attempt) a long wait that a drain cuts short
        (the run is handed back) or a kill -9 ends (the run is retried)."""
        await ctx.step("before", lambda: "done")
        await ctx.emit("lingering", {})
        await asyncio.sleep(LINGER["s"] if ctx.attempt == 1 else 0)
        return "finished"

    @app.pipeline("consults")
    async def consults(ctx: RunContext, input: Any) -> str:
        """Asks the OpenAI-compatible endpoint at ``input["model_url"]`` twice: a reply, then a stream."""
        async with ChatClient(input["model_url"], model="m") as llm:
            reply = await llm.complete(ctx, [{"role": "user", "content": "hi"}])
            streamed = await llm.stream(ctx, [{"role": "user", "content": "again"}])
        return reply.text + streamed.text

    @app.pipeline("delegates")
    async def delegates(ctx: RunContext, input: Any) -> str:
        """Creates a ``whoami`` run on the runyard at ``input["url"]``; the id of that run."""
        async with AsyncClient(input["url"], client_id="delegate") as client:
            created = await client.create("whoami", None)
        return str(created["run_id"])

    return app


app = build_traced_app(Settings())
