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
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from runyard.adapters._support import jsonable, missing_extra
from runyard.context import RunContext, current_run

try:
    from langchain_core.callbacks import AsyncCallbackHandler
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise missing_extra("langchain", "langchain-core", "langchain") from exc

__all__ = ["RunyardCallbackHandler"]


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


def _text(block: str | dict[str, Any]) -> str:
    if isinstance(block, str):
        return block
    return str(block.get("text", "")) if block.get("type") == "text" else ""


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:1000]
