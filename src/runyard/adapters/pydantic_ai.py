"""A pydantic-ai agent's streamed run inside a runyard run, each model call a step.

    output = await stream_agent(agent, input.question, deps=...)

runs ``agent.run_stream(...)`` with its model wrapped in ``StepModel``: each
request to the model is a ``ctx.step`` named ``model:<model name>``, its
response recorded, so a run that executes again (after an answer, a drain, a
lost worker) gets the responses it already paid for without asking the model
again. The text the model streams becomes ``token`` events as it comes (when
the agent's output is text); then one ``usage`` event ``{"requests",
"input_tokens", "output_tokens", "total_tokens"}`` and the agent's output.
Tools reach their run with ``runyard.current_run()`` (the run's context is the
agent's), so they emit progress and events of their own without any extra
plumbing; a tool that costs money makes its own work a ``ctx.step``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from runyard.adapters._support import missing_extra
from runyard.context import RunContext, current_run

try:
    from pydantic_ai import RunContext as AgentRunContext
    from pydantic_ai.agent import AbstractAgent
    from pydantic_ai.messages import (
        ModelMessage,
        ModelMessagesTypeAdapter,
        ModelResponse,
        PartDeltaEvent,
        PartStartEvent,
        TextPart,
        TextPartDelta,
        UserContent,
    )
    from pydantic_ai.models import CompletedStreamedResponse, Model, ModelRequestParameters, StreamedResponse
    from pydantic_ai.models.wrapper import WrapperModel
    from pydantic_ai.settings import ModelSettings
    from pydantic_ai.usage import RunUsage
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise missing_extra("pydantic_ai", "pydantic-ai-slim", "pydantic-ai") from exc

__all__ = ["StepModel", "stream_agent"]

OutputT = TypeVar("OutputT")
MAX_NAME = 128  # a step's name is at most this long (runyard.journal)


class StepModel(WrapperModel):
    """A model whose every request is a ``ctx.step`` of the run ``ctx`` (default:
    the current run at each request): recorded once answered, its record
    returned on every later execution. A streamed request streams its text as
    ``token`` events while it is under way (``tokens=True``; text arriving
    within ``debounce_by`` seconds of the last event goes in one) and is
    recorded whole when it ends; replayed, it streams nothing again."""

    def __init__(
        self,
        wrapped: Model | str,
        *,
        ctx: RunContext | None = None,
        tokens: bool = True,
        debounce_by: float | None = None,
    ) -> None:
        super().__init__(wrapped)
        self._ctx = ctx
        self._tokens = tokens
        self._debounce_by = debounce_by

    @property
    def step_name(self) -> str:
        return f"model:{self.wrapped.model_name}"[:MAX_NAME]

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        async def call() -> Any:
            return _dump(await self.wrapped.request(messages, model_settings, model_request_parameters))

        return _load(await self._run().step(self.step_name, call))

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: AgentRunContext[Any] | None = None,
    ) -> AsyncIterator[StreamedResponse]:
        ctx = self._run()

        async def call() -> Any:
            # The stream is drained inside the step, its text sent as it comes: a
            # step's events come before its record, so a replay skips them too.
            stream = self.wrapped.request_stream(messages, model_settings, model_request_parameters, run_context)
            tokens = _Tokens(ctx, self._debounce_by)
            async with stream as streamed:
                async for event in streamed:
                    if self._tokens:
                        await tokens.add(_text_of(event))
            await tokens.flush()
            return _dump(streamed.get())

        response = _load(await ctx.step(self.step_name, call))
        # The agent reads the recorded response as one streamed part per part; its text is already sent.
        yield CompletedStreamedResponse(response, model_request_parameters=model_request_parameters, replay_events=True)

    def _run(self) -> RunContext:
        return self._ctx or current_run()


class _Tokens:
    """Text on its way to ``token`` events: each piece at once, or grouped by ``debounce_by``."""

    def __init__(self, ctx: RunContext, debounce_by: float | None) -> None:
        self._ctx = ctx
        self._debounce_by = debounce_by
        self._pending = ""
        self._sent_at = time.monotonic()

    async def add(self, text: str) -> None:
        self._pending += text
        if self._debounce_by is None or time.monotonic() - self._sent_at >= self._debounce_by:
            await self.flush()

    async def flush(self) -> None:
        if self._pending:
            text, self._pending = self._pending, ""
            self._sent_at = time.monotonic()
            await self._ctx.token(text)


async def stream_agent(
    agent: AbstractAgent[Any, OutputT],
    prompt: str | Sequence[UserContent] | None,
    *,
    ctx: RunContext | None = None,
    deps: Any = None,
    message_history: Sequence[ModelMessage] | None = None,
    debounce_by: float | None = None,
    **run_options: Any,
) -> OutputT:
    """Run ``agent`` on ``prompt`` with ``run_stream`` as the run ``ctx`` (default:
    the current run), each model request a step (``StepModel``), streaming its
    text as ``token`` events; returns its output.

    ``debounce_by`` (seconds) groups text arriving that close together into one
    event; ``None`` sends every delta as it comes. An agent whose output is not
    text streams no tokens: its validated output is only returned. ``run_options`` go to ``run_stream`` as they are
    (``model``, ``model_settings``, ``usage_limits``, ...)."""
    ctx = ctx or current_run()
    model = run_options.pop("model", None) or agent.model
    if model is None:
        raise ValueError("stream_agent needs a model: the agent has none, and none was given")
    text = run_options.get("output_type", agent.output_type) is str
    durable = model if isinstance(model, StepModel) else StepModel(model, ctx=ctx, tokens=text, debounce_by=debounce_by)
    async with agent.run_stream(
        prompt, deps=deps, message_history=message_history, model=durable, **run_options
    ) as result:
        output: OutputT = await result.get_output()
        usage = result.usage
    await ctx.emit("usage", usage_data(usage))
    return output


def usage_data(usage: RunUsage) -> dict[str, int]:
    """What a ``usage`` event says of a pydantic-ai run's usage."""
    return {
        "requests": usage.requests,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def _text_of(event: Any) -> str:
    """The text a stream event adds to a text part (``""`` for anything else)."""
    if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
        return event.part.content
    if isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
        return event.delta.content_delta
    return ""


def _dump(response: ModelResponse) -> Any:
    """A model's response as the JSON a step records."""
    return ModelMessagesTypeAdapter.dump_python([response], mode="json")[0]


def _load(recorded: Any) -> ModelResponse:
    [response] = ModelMessagesTypeAdapter.validate_python([recorded])
    assert isinstance(response, ModelResponse)  # recorded from one
    return response
