"""``runyard.adapters.pydantic_ai.stream_agent``: an agent's ``run_stream`` inside
a run, with pydantic-ai's ``TestModel`` and ``FunctionModel``. Its text deltas
become ``token`` events, its usage a ``usage`` event, its tools reach their own
run through ``current_run()``, and each model request is a step."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.models.test import TestModel

from runyard import RunContext, Runyard, Settings, current_run
from runyard.adapters.pydantic_ai import StepModel, stream_agent
from tests.adapters.runs import OWNER, finish, run_to_end, until_waiting

weather = Agent(TestModel(custom_output_text="It is sunny in Lyon."), instructions="Answer about the weather.")


@weather.tool_plain
async def forecast(city: str) -> str:
    """The forecast for a city."""
    run = current_run()  # the run this agent works for: no deps needed
    await run.progress(1, 1, f"looked up {city}")
    await run.emit("forecast.lookup", {"city": city, "session": run.session_id})
    return f"sunny in {city}"


def build() -> Runyard:
    app = Runyard(Settings(store="memory://"))

    @app.pipeline("weather")
    async def ask_weather(ctx: RunContext, input: dict[str, Any]) -> dict[str, Any]:
        answer = await stream_agent(weather, input["question"])
        return {"answer": answer}

    return app


async def test_an_agents_text_streams_as_tokens_and_its_tools_reach_the_run() -> None:
    async with build().running() as rt:
        done = await run_to_end(rt, "weather", {"question": "Weather in Lyon?"})

    assert done.run.status == "succeeded"
    assert done.run.output == {"answer": "It is sunny in Lyon."}
    assert done.text() == "It is sunny in Lyon." and len(done.of_type("token")) > 1
    [lookup] = done.of_type("forecast.lookup")
    assert lookup["session"] == done.run.session_id
    assert done.of_type("progress")[0]["message"].startswith("looked up")
    [usage] = done.of_type("usage")
    assert usage["requests"] == 2  # one to call the tool, one to answer
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0
    assert done.types().index("forecast.lookup") < done.types().index("token") < done.types().index("usage")


async def test_each_run_of_a_shared_agent_gets_its_own_tool_events() -> None:
    async with build().running() as rt:
        runs = await asyncio.gather(*(run_to_end(rt, "weather", {"question": f"q{i}"}) for i in range(3)))

    for done in runs:
        [lookup] = done.of_type("forecast.lookup")
        assert lookup["session"] == done.run.session_id


async def test_every_delta_a_model_streams_is_one_token_event() -> None:
    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        for piece in ["Once ", "upon ", "a ", "time."]:
            yield piece

    storyteller = Agent(FunctionModel(stream_function=stream))
    app = Runyard(Settings(store="memory://"))

    @app.pipeline("story")
    async def story(ctx: RunContext, input: dict[str, Any]) -> str:
        return await stream_agent(storyteller, input["prompt"], ctx=ctx)

    async with app.running() as rt:
        done = await run_to_end(rt, "story", {"prompt": "tell me"})

    assert done.run.output == "Once upon a time."
    assert [t["text"] for t in done.of_type("token")] == ["Once ", "upon ", "a ", "time."]


class Forecast(BaseModel):
    city: str
    sunny: bool


async def test_an_agent_with_a_structured_output_streams_no_tokens_and_returns_it() -> None:
    forecaster = Agent(TestModel(), output_type=Forecast)
    app = Runyard(Settings(store="memory://"))

    @app.pipeline("forecast")
    async def forecast_pipeline(ctx: RunContext, input: dict[str, Any]) -> Forecast:
        return await stream_agent(forecaster, input["city"])

    async with app.running() as rt:
        done = await run_to_end(rt, "forecast", {"city": "Lyon"})

    assert done.run.status == "succeeded"
    assert set(done.run.output) == {"city", "sunny"}
    assert done.of_type("token") == [] and len(done.of_type("usage")) == 1


async def test_each_model_request_is_a_step_a_later_execution_does_not_pay_for_again(store_url: str) -> None:
    """The run asks after the agent answered: its second execution (after the
    answer) replays the agent's two model requests from their records."""
    requests: list[int] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        requests.append(len(messages))
        if len(messages) == 1:  # first, the tool; then the answer
            yield {0: DeltaToolCall(name="forecast", json_args='{"city": "Lyon"}', tool_call_id="call-1")}
        else:
            for piece in ["Sunny ", "in ", "Lyon."]:
                yield piece

    agent = Agent(FunctionModel(stream_function=model))
    agent.tool_plain(forecast)
    app = Runyard(Settings(store=store_url))

    @app.pipeline("confirm")
    async def confirm(ctx: RunContext, input: dict[str, Any]) -> dict[str, Any]:
        answer = await stream_agent(agent, input["question"])
        verdict = await ctx.ask({"confirm": answer})
        return {"answer": answer, "verdict": verdict}

    async with app.running() as rt:
        run = await rt.create_run(OWNER, "confirm", {"question": "Weather in Lyon?"})
        waiting = await until_waiting(rt, run)
        assert waiting.snapshot()["waiting_for"]["request"] == {"confirm": "Sunny in Lyon."}
        await rt.answer(OWNER, run.run_id, "thanks")
        done = await finish(rt, run)

    assert done.run.output == {"answer": "Sunny in Lyon.", "verdict": "thanks"}
    assert requests == [1, 3], "each request made once, over both executions"
    steps = [(step["name"], step["n"]) for step in done.of_type("step") if step["status"] == "done"]
    assert steps == [("model:function::model", 1), ("model:function::model", 2)]
    assert [t["text"] for t in done.of_type("token")] == ["Sunny ", "in ", "Lyon."]
    assert len(done.of_type("forecast.lookup")) == 1 and len(done.of_type("usage")) == 1


async def test_a_step_model_records_the_requests_of_a_plain_agent_run_too() -> None:
    requests: list[int] = []

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        requests.append(len(messages))
        return ModelResponse(parts=[TextPart("Draft ready.")])

    drafter = Agent(StepModel(FunctionModel(model)))
    app = Runyard(Settings(store="memory://"))

    @app.pipeline("draft")
    async def draft(ctx: RunContext, input: Any) -> dict[str, Any]:
        result = await drafter.run("write it")
        return {"draft": result.output, "verdict": await ctx.ask("publish?")}

    async with app.running() as rt:
        run = await rt.create_run(OWNER, "draft", None)
        await until_waiting(rt, run)
        await rt.answer(OWNER, run.run_id, "yes")
        done = await finish(rt, run)

    assert done.run.output == {"draft": "Draft ready.", "verdict": "yes"}
    assert requests == [1]
    assert done.of_type("token") == []  # a plain request streams nothing
