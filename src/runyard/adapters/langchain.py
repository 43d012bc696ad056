"""LangChain callbacks as runyard events.

    model.astream(messages, config={"callbacks": [RunyardCallbackHandler()]})

- ``on_llm_new_token``: a ``token`` event ``{"text"}`` (a model streams its
  tokens when called with ``astream``, or when built with ``streaming=True``);
- a tool starting: ``tool.start`` ``{"id", "name", "input"}``; ending:
  ``tool.end`` ``{"id", "name", "output"}`` (``id`` pairs the two);
- a tool or model failing: ``error`` ``{"code": "tool_error" or "llm_error",
  "message", "name"}`` (the exception still propagates as LangChain decides;
  a cancellation is no error: the run's status tells of it).

The handler finds its run with ``current_run()`` at each callback unless given
one, so one handler may be shared by every run (attached to a model built at
import time, say). Callbacks of an async call are awaited in order, inline.

Each model call a step, so a run that executes again does not pay for it twice:

    model = StepChatModel(ChatOpenAI(...))          # built once, like the model

``StepChatModel`` is a chat model whose every call is ``ctx.step("model:<name>")``
of the current run: the first execution calls the wrapped model (streaming it,
sending its text as ``token`` events as it comes) and records its message;
later executions return the recorded message at once, without a token again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from pydantic import ConfigDict
from pydantic_core import to_jsonable_python

from runyard.adapters._support import jsonable, message_text, missing_extra
from runyard.context import RunContext, current_run

try:
    from langchain_core.callbacks import AsyncCallbackHandler, AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
    from langchain_core.language_models import BaseChatModel, LanguageModelInput
    from langchain_core.messages import (
        AIMessage,
        BaseMessage,
        message_chunk_to_message,
        message_to_dict,
        messages_from_dict,
    )
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langchain_core.runnables import Runnable
    from langchain_core.tools import BaseTool
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise missing_extra("langchain", "langchain-core", "langchain") from exc

__all__ = ["RunyardCallbackHandler", "StepChatModel"]
MAX_NAME = 128  # a step's name is at most this long (runyard.journal)


class RunyardCallbackHandler(AsyncCallbackHandler):
    """Turns a LangChain run's tokens, tool calls and errors into events of a runyard run."""

    run_inline = True  # awaited in order, in the caller's context (where current_run() is)
    raise_error = True  # an event that cannot be written fails the call, as ctx.emit would

    def __init__(self, ctx: RunContext | None = None) -> None:
        self._ctx = ctx
        self._tools: dict[UUID, str] = {}  # the tools under way, by LangChain run id

    @property
    def ctx(self) -> RunContext:
        """The run that events go to: the one given, else the current run."""
        return self._ctx or current_run()

    async def on_llm_new_token(
        self,
        token: str | list[str | dict[str, Any]],
        *,
        chunk: Any = None,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        text = token if isinstance(token, str) else "".join(_text(block) for block in token)
        if text:
            await self.ctx.token(text)

    async def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = str(kwargs.get("name") or (serialized or {}).get("name") or "tool")
        self._tools[run_id] = name
        data = {"id": str(run_id), "name": name, "input": jsonable(inputs if inputs is not None else input_str)}
        await self.ctx.emit("tool.start", data)

    async def on_tool_end(
        self,
        output: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        name = self._tools.pop(run_id, "tool")
        await self.ctx.emit("tool.end", {"id": str(run_id), "name": name, "output": jsonable(output)})

    async def on_tool_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        name = self._tools.pop(run_id, "tool")
        if isinstance(error, Exception):  # not a cancellation: the run's own status tells of that
            await self.ctx.emit("tool.error", {"code": "tool_error", "message": _describe(error), "name": name})

    async def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        name = str(kwargs.get("name") or "llm")
        if isinstance(error, Exception):
            await self.ctx.emit("llm.error", {"code": "llm_error", "message": _describe(error), "name": name})


class StepChatModel(BaseChatModel):
    """A chat model each call of which is a ``ctx.step`` of the current run (or
    of ``ctx``), named ``model:<name>`` (``name``: the wrapped model's
    ``model_name`` or ``model``, else its type). It streams the wrapped model
    inside the step, sending its text as ``token`` events (``tokens=True``),
    and records the whole message; to the caller (and its callbacks) it is a
    model that does not stream: its message comes whole, recorded or new, so
    a ``RunyardCallbackHandler`` beside it sends no token twice. Tools bound with
    ``bind_tools`` are bound to the wrapped model."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    wrapped: Runnable[LanguageModelInput, BaseMessage]
    step_name: str = ""
    ctx: RunContext | None = None
    tokens: bool = True  # send the text the wrapped model streams as ``token`` events

    def __init__(self, wrapped: Runnable[LanguageModelInput, BaseMessage], **kwargs: Any) -> None:
        kwargs.setdefault("step_name", f"model:{kwargs.pop('name', None) or _model_name(wrapped)}"[:MAX_NAME])
        super().__init__(wrapped=wrapped, **kwargs)

    @property
    def _llm_type(self) -> str:
        return "runyard-step"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        if not isinstance(self.wrapped, BaseChatModel):
            raise TypeError("bind_tools needs a StepChatModel around a chat model, not around a binding")
        bound = self.wrapped.bind_tools(tools, tool_choice=tool_choice, **kwargs)
        return StepChatModel(bound, step_name=self.step_name, ctx=self.ctx, tokens=self.tokens)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        raise TypeError("a StepChatModel records its calls as steps of a run: call it with ainvoke/astream")

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        ctx = self.ctx or current_run()

        async def call() -> Any:
            # Streamed, its text sent as it comes: a step's events come before its
            # record, so a replay (which returns the record) sends none again.
            whole: Any = None
            async for chunk in self.wrapped.astream(messages, stop=stop, **kwargs):
                if self.tokens and (text := message_text(chunk)):
                    await ctx.token(text)
                whole = chunk if whole is None else whole + chunk
            if whole is None:
                raise ValueError(f"{self.step_name} streamed no message")
            message = message_chunk_to_message(whole)
            return to_jsonable_python(message_to_dict(message), fallback=repr)

        recorded = await ctx.step(self.step_name, call)
        [message] = messages_from_dict([recorded])
        return ChatResult(generations=[ChatGeneration(message=message)])


def _model_name(model: Any) -> str:
    bound = getattr(model, "bound", model)  # a binding (bind_tools) names its model
    for field in ("model_name", "model"):
        if isinstance(value := getattr(bound, field, None), str) and value:
            return value
    return str(getattr(bound, "_llm_type", type(bound).__name__))


def _text(block: str | dict[str, Any]) -> str:
    if isinstance(block, str):
        return block
    return str(block.get("text", "")) if block.get("type") == "text" else ""


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:1000]
