"""What the adapters share: importing a framework with a helpful error, and
turning a framework's objects into the JSON that events carry."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from enum import Enum
from typing import Any

from pydantic import BaseModel

from runyard.context import RESERVED_TYPES
from runyard.models import EVENT_TYPE

# Event types that only the runtime emits; an adapter never lets a framework's payload claim them.
RUNTIME_TYPES = RESERVED_TYPES


def missing_extra(adapter: str, package: str, extra: str) -> ImportError:
    """The error an adapter raises when its framework is not installed."""
    return ImportError(
        f"runyard.adapters.{adapter} needs {package}, which is not installed: pip install 'runyard[{extra}]'",
        name=package,
    )


def is_event_type(value: object) -> bool:
    """Whether ``value`` may name an event a pipeline emits."""
    return isinstance(value, str) and value not in RUNTIME_TYPES and EVENT_TYPE.fullmatch(value) is not None


def jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON: LangChain messages become compact dicts, pydantic
    models and dataclasses their fields, anything else unknown its ``repr``."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if depth > 32:  # a cycle, or a structure nobody wants in an event
        return repr(value)
    if _is_message(value):
        return message_dict(value, depth)
    if isinstance(value, Mapping):
        return {str(key): jsonable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(item, depth + 1) for item in value]
    if isinstance(value, Enum):
        return jsonable(value.value, depth + 1)
    if isinstance(value, BaseModel):
        return jsonable(value.model_dump(mode="json"), depth + 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
        return jsonable(fields, depth + 1)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return repr(value)


def _is_message(value: object) -> bool:
    # No message can exist before langchain_core.messages is imported, so there
    # is nothing to import here: the adapters work without LangChain installed.
    messages = sys.modules.get("langchain_core.messages")
    return messages is not None and isinstance(value, messages.BaseMessage)


def message_dict(message: Any, depth: int = 0) -> dict[str, Any]:
    """A LangChain message as ``{"type", "content", ...}``, keeping only the
    fields a reader of the event needs (name, id, tool calls, tool call id)."""
    data: dict[str, Any] = {"type": message.type, "content": jsonable(message.content, depth + 1)}
    for field in ("name", "id", "tool_call_id"):
        if (value := getattr(message, field, None)) is not None:
            data[field] = str(value)
    if tool_calls := getattr(message, "tool_calls", None):
        data["tool_calls"] = [
            {"id": call.get("id"), "name": call.get("name"), "args": jsonable(call.get("args"), depth + 1)}
            for call in tool_calls
        ]
    return data


def message_text(message: Any) -> str:
    """The text of an AI message (or chunk): its string content, or its text blocks."""
    content = getattr(message, "content", "")
    if isinstance(content, str):
        return content
    return "".join(_block_text(block) for block in content or ())


def _block_text(block: Any) -> str:
    if isinstance(block, str):
        return block
    if isinstance(block, Mapping) and block.get("type") == "text" and isinstance(block.get("text"), str):
        return str(block["text"])
    return ""
