"""Pipelines that use durable steps, questions and sleeps, for the durable-work specs.

Every step's ``fn`` counts its calls in ``CALLS`` (this process) or, given a
fake API's URL, with an HTTP request the test can count across processes."""

from __future__ import annotations

import asyncio
import threading
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
    api: str | None = None  # count calls on this fake API's /call URL (another process may run the step)
    ask: bool = False
    sleep_s: float = 0.0


class Approval(BaseModel):
    approve: bool
    note: str = ""


def flaky() -> None:
    CALLS["flaky"] += 1
    raise RuntimeError("flaky fails every time")


async def call_stage(name: str, seconds: float, api: str | None) -> dict[str, Any]:
    """One paid call: counted here and, with ``api``, on the fake API."""
    CALLS[name] += 1
    if api is not None:
        async with httpx.AsyncClient() as client:
            response = await client.post(api, params={"delay": seconds}, headers={"x-owner": name}, timeout=30)
            response.raise_for_status()
    elif seconds:
        await asyncio.sleep(seconds)
    return {"stage": name, "result": f"{name}-done"}


def build_durable_app(settings: Settings) -> Runyard:
    app = Runyard(settings)
    register_durable_pipelines(app)
    return app


def register_durable_pipelines(app: Runyard) -> None:
    """``stages``, ``interview``, ``impatient``, ``not_json``, ``clock``, ``kinds``, ``cut_off``."""

    @app.pipeline("kinds")
    async def kinds(ctx: RunContext, input: Any) -> dict[str, Any]:
        """A sync step (in a thread), a pydantic result, a failing step caught, then asks."""
        thread = await ctx.step("sync", lambda: threading.current_thread().name)
        model = await ctx.step("model", Approval, approve=True)
        try:
            await ctx.step("flaky", flaky)
        except RuntimeError:
            await ctx.emit("flaky.failed", {})
        await ctx.ask("again?")
        return {"thread": thread, "model": model, "flaky": CALLS["flaky"]}

    @app.pipeline("cut_off")
    async def cut_off(ctx: RunContext, input: Any) -> Any:
        """A step whose ``fn`` stops mid-way (it waits for an answer): it is not
        recorded, so it runs again, after a ``restarted`` marker."""

        async def inside() -> Any:
            await ctx.emit("inside", {"call": CALLS["inside"]})
            CALLS["inside"] += 1
            return await ctx.ask("inside the step?")

        await ctx.emit("before", {})
        answer = await ctx.step("outer", inside)
        await ctx.emit("after", {"answer": answer})
        return answer

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

    @app.pipeline("clock", timeout_s=2.5)
    async def clock(ctx: RunContext, input: Any) -> str:
        """Executes 0.6 s, waits 2 s, executes 0.6 s: over its 2.5 s timeout only if waiting counted
        (the margin: a loaded machine executes the 1.2 s in up to 2.5 s)."""
        await ctx.step("early", asyncio.sleep, 0.6)
        await ctx.sleep(float(input or 2.0))
        await ctx.step("late", asyncio.sleep, 0.6)
        return "done"


app = build_durable_app(Settings())  # ``runyard serve tests.durable.app:app``, configured by RUNYARD_* variables
