"""``runyard.adapters.langchain.RunyardCallbackHandler``: LangChain's callbacks
become events of the run that made the call: streamed tokens, tool starts and
ends, and errors; ``StepChatModel`` makes each model call a step. The models
are LangChain's own fakes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from itertools import cycle
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.tools import ToolException, tool

from runyard import RunContext, Runyard, Settings
from runyard.adapters.langchain import RunyardCallbackHandler, StepChatModel
from tests.adapters.runs import OWNER, finish, run_to_end, until_waiting

# One handler for every run: each callback finds its own run with current_run().
events = RunyardCallbackHandler()


@tool
async def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@tool
async def divide(a: int, b: int) -> float:
    """Divide a by b."""
    if b == 0:
        raise ToolException("cannot divide by zero")
    return a / b


def build() -> Runyard:
    app = Runyard(Settings(store="memory://"))

    @app.pipeline("chain")
    async def chain(ctx: RunContext, input: dict[str, Any]) -> dict[str, Any]:
        model = GenericFakeChatModel(messages=iter([input["reply"]]))
        config: Any = {"callbacks": [events]}
        chunks = [chunk.text async for chunk in model.astream("hi", config=config)]
        total = await add.ainvoke({"a": 2, "b": 3}, config=config)
        return {"reply": "".join(chunks), "total": total}

    @app.pipeline("failing_tool")
    async def failing_tool(ctx: RunContext, input: dict[str, Any]) -> Any:
        return await divide.ainvoke({"a": 1, "b": 0}, config={"callbacks": [RunyardCallbackHandler(ctx)]})

    return app


async def test_streamed_tokens_and_tool_calls_become_events() -> None:
    async with build().running() as rt:
        done = await run_to_end(rt, "chain", {"reply": "two plus three"})

    assert done.run.output == {"reply": "two plus three", "total": 5}
    assert [t["text"] for t in done.of_type("token")] == ["two", " ", "plus", " ", "three"]
    [start] = done.of_type("tool.start")
    [end] = done.of_type("tool.end")
    assert start == {"id": start["id"], "name": "add", "input": {"a": 2, "b": 3}}
    assert end == {"id": start["id"], "name": "add", "output": 5}
    assert done.types().index("tool.start") > done.types().index("token")


async def test_a_shared_handler_sends_each_runs_callbacks_to_that_run() -> None:
    async with build().running() as rt:
        runs = await asyncio.gather(*(run_to_end(rt, "chain", {"reply": f"reply {i}"}) for i in range(3)))

    assert [done.text() for done in runs] == ["reply 0", "reply 1", "reply 2"]
    assert all(len(done.of_type("tool.end")) == 1 for done in runs)


async def test_a_failing_tool_is_a_tool_error_event_and_its_exception_still_fails_the_run() -> None:
    """``error`` is the runtime's own type (issue 10): the tool's failure has its own."""
    async with build().running() as rt:
        done = await run_to_end(rt, "failing_tool", {})

    assert done.run.status == "failed" and done.run.error is not None
    assert "cannot divide by zero" in done.run.error.message
    (tool_error,) = done.of_type("tool.error")
    (run_error,) = done.of_type("error")  # the runtime's, for the run
    assert tool_error == {"code": "tool_error", "message": "ToolException: cannot divide by zero", "name": "divide"}
    assert run_error["code"] == "pipeline_error"
    assert done.types().count("tool.start") == 1 and "tool.end" not in done.types()


class CountedModel(GenericFakeChatModel):
    """LangChain's fake, counting the calls that reach it."""

    calls: int = 0

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        self.calls += 1
        async for chunk in super()._astream(*args, **kwargs):
            yield chunk


async def test_a_step_chat_model_records_each_call_so_a_later_execution_does_not_pay_for_it_again(
    store_url: str,
) -> None:
    """The run asks after the model answered: its second execution (after the
    answer) gets the recorded message, with no call and no token again."""
    counted = CountedModel(messages=cycle([AIMessage("ship it today")]))
    model = StepChatModel(counted, name="fake")
    app = Runyard(Settings(store=store_url))

    @app.pipeline("decide")
    async def decide(ctx: RunContext, input: dict[str, Any]) -> dict[str, Any]:
        chunks = [chunk.text async for chunk in model.astream(input["question"], config={"callbacks": [events]})]
        verdict = await ctx.ask({"proposal": "".join(chunks)})
        return {"proposal": "".join(chunks), "verdict": verdict}

    async with app.running() as rt:
        run = await rt.create_run(OWNER, "decide", {"question": "when?"})
        waiting = await until_waiting(rt, run)
        assert waiting.snapshot()["waiting_for"]["request"] == {"proposal": "ship it today"}
        await rt.answer(OWNER, run.run_id, "agreed")
        done = await finish(rt, run)

    assert done.run.output == {"proposal": "ship it today", "verdict": "agreed"}
    assert counted.calls == 1
    assert [step["status"] for step in done.of_type("step") if step["name"] == "model:fake"] == ["started", "done"]
    assert done.text() == "ship it today" and len(done.of_type("token")) == 5  # streamed word by word, once
