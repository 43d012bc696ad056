"""A pydantic-ai agent's streamed run inside a runyard run.

    output = await stream_agent(agent, input.question, deps=...)

runs ``agent.run_stream(...)`` and turns the text it streams into ``token``
events, then emits one ``usage`` event ``{"requests", "input_tokens",
"output_tokens", "total_tokens"}`` and returns the agent's output. Tools reach
their run with ``runyard.current_run()`` (the run's context is the agent's), so
they emit progress and events of their own without any extra plumbing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from runyard.adapters._support import missing_extra
from runyard.context import RunContext, current_run

try:
    from pydantic_ai.agent import AbstractAgent
    from pydantic_ai.messages import ModelMessage, UserContent
    from pydantic_ai.usage import RunUsage
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise missing_extra("pydantic_ai", "pydantic-ai-slim", "pydantic-ai") from exc

__all__ = ["stream_agent"]

OutputT = TypeVar("OutputT")


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
    the current run), streaming its text as ``token`` events; returns its output.

    ``debounce_by`` (seconds) groups text arriving that close together into one
    event; ``None`` sends every delta as it comes. An agent whose output is not
    text streams no tokens: its validated output is only returned.
    ``run_options`` go to ``run_stream`` as they are (``model_settings``,
    ``usage_limits``, ...)."""
    ctx = ctx or current_run()
    async with agent.run_stream(prompt, deps=deps, message_history=message_history, **run_options) as result:
        if run_options.get("output_type", agent.output_type) is str:
            async for delta in result.stream_text(delta=True, debounce_by=debounce_by):
                if delta:
                    await ctx.token(delta)
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
