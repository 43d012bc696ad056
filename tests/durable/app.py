"""Pipelines that use durable steps, questions and sleeps, for the durable-work specs.

Every step's ``fn`` counts its calls in ``CALLS`` (this process) or, given a
fake API's URL, with an HTTP request the test can count across processes."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from runyard import RunContext, Runyard, Settings

CALLS: Counter[str] = Counter()


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stages: int = 3
    stage_s: float = 0.0  # how long each stage's call takes
    api: str | None = None  # count calls on this fake API (another process may run the step)
    ask: bool = False
    sleep_s: float = 0.0


class Approval(BaseModel):
    approve: bool
    note: str = ""


async def call_stage(name: str, seconds: float, api: str | None) -> dict[str, Any]:
    """One paid call: counted here and, with ``api``, on the fake API."""
    CALLS[name] += 1
    if api is not None:
        async with httpx.AsyncClient() as client:
            await client.get(f"{api}/call", params={"delay": seconds}, headers={"x-owner": name})
    elif seconds:
        await asyncio.sleep(seconds)
    return {"stage": name, "result": f"{name}-done"}


def build_durable_app(settings: Settings) -> Runyard:
    app = Runyard(settings)

    @app.pipeline("stages", input_model=Plan, retries=2)
    async def stages(ctx: RunContext, plan: Plan) -> dict[str, Any]:
        """Emit, call each stage as a step, maybe ask and sleep between."""
        results = []
        for i in range(1, plan.stages + 1):
            await ctx.emit("stage.begin", {"i": i})
            await ctx.progress(i, plan.stages)
            results.append(await ctx.step(f"stage{i}", call_stage, f"stage{i}", plan.stage_s, plan.api))
            await ctx.emit("stage.end", {"i": i})
            if plan.ask and i == 1:
                answer = await ctx.ask({"question": "go on?"}, schema=Approval, timeout_s=60)
                await ctx.emit("answered", answer.model_dump())
            if plan.sleep_s and i == 1:
                await ctx.sleep(plan.sleep_s)
                await ctx.emit("slept", {"s": plan.sleep_s})
        return {"results": results}

    @app.pipeline("interview")
    async def interview(ctx: RunContext, input: Any) -> dict[str, Any]:
        """Three questions in turn, the last checked against a JSON Schema."""
        name = await ctx.ask("your name?")
        colour = await ctx.ask({"q": "favourite colour?", "to": name})
        age = await ctx.ask("your age?", schema={"type": "integer", "minimum": 0})
        return {"name": name, "colour": colour, "age": age}

    @app.pipeline("impatient")
    async def impatient(ctx: RunContext, input: Any) -> Any:
        return await ctx.ask("quick!", timeout_s=float(input or 0.5))

    @app.pipeline("not_json")
    async def not_json(ctx: RunContext, input: Any) -> Any:
        return await ctx.step("bad", lambda: {1, 2})

    @app.pipeline("clock", timeout_s=1.5)
    async def clock(ctx: RunContext, input: Any) -> str:
        """Executes 0.6 s, waits 1 s, executes 0.6 s: over its 1.5 s timeout only if waiting counted."""
        await ctx.step("early", asyncio.sleep, 0.6)
        await ctx.sleep(float(input or 1.0))
        await ctx.step("late", asyncio.sleep, 0.6)
        return "done"

    return app
