"""The Vercel AI SDK's wire format (``ai`` v6): the chat request its
``DefaultChatTransport`` POSTs, and the UI message stream it reads back, one
JSON chunk per ``data:`` line, ending with ``data: [DONE]``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from runyard.errors import InvalidRequest
from runyard.events.sse import data_line
from runyard.session_ids import SESSION_ID

MAX_MESSAGES = 10_000  # the transport sends the whole conversation every time
MAX_PARTS = 1024
MAX_TEXT = 1_000_000
# what tells the client that this is a UI message stream (the SDK's UI_MESSAGE_STREAM_HEADERS)
STREAM_HEADER = (b"x-vercel-ai-ui-message-stream", b"v1")


# -- the request -------------------------------------------------------------------


class _Loose(BaseModel):
    # what else the SDK (or an app's `body` option) sends is ignored, not refused:
    # a useChat page must work unchanged
    model_config = ConfigDict(extra="ignore")


class UIPart(_Loose):
    type: Annotated[str, Field(min_length=1, max_length=256)]
    text: Annotated[str | None, Field(max_length=MAX_TEXT)] = None


class UIMessage(_Loose):
    id: Annotated[str, Field(max_length=256)] = ""
    role: Literal["system", "user", "assistant"]
    parts: Annotated[list[UIPart], Field(max_length=MAX_PARTS)]

    def text(self) -> str:
        """The message's text parts, joined."""
        return "".join(part.text or "" for part in self.parts if part.type == "text")


class ChatRequest(_Loose):
    id: Annotated[
        str,
        Field(
            min_length=1,
            max_length=128,
            pattern=rf"^{SESSION_ID.pattern}$",
            description="the chat's id: the session the run joins (created on first use)",
        ),
    ]
    messages: Annotated[list[UIMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    trigger: Literal["submit-message", "regenerate-message"] | None = None
    messageId: Annotated[str | None, Field(max_length=256)] = None

    def pipeline_input(self) -> dict[str, str]:
        """``{"message": <the last user message's text>}``, as the contract says."""
        for message in reversed(self.messages):
            if message.role == "user":
                return {"message": message.text()}
        raise InvalidRequest("messages: no message has the role user")


# -- the UI message stream -----------------------------------------------------------


def start(message_id: str) -> bytes:
    return data_line({"type": "start", "messageId": message_id})


START_STEP = data_line({"type": "start-step"})
FINISH_STEP = data_line({"type": "finish-step"})


def text_start(text_id: str) -> bytes:
    return data_line({"type": "text-start", "id": text_id})


def text_delta(text_id: str, delta: str) -> bytes:
    return data_line({"type": "text-delta", "id": text_id, "delta": delta})


def text_end(text_id: str) -> bytes:
    return data_line({"type": "text-end", "id": text_id})


def data_part(kind: str, part_id: str, data: Any) -> bytes:
    """A ``data-<kind>`` part; its ``id`` makes a replayed part replace itself
    rather than appear twice."""
    return data_line({"type": f"data-{kind}", "id": part_id, "data": data})


def error(text: str) -> bytes:
    return data_line({"type": "error", "errorText": text})


def abort(reason: str) -> bytes:
    return data_line({"type": "abort", "reason": reason})


def finish(reason: Literal["stop", "error", "other"]) -> bytes:
    return data_line({"type": "finish", "finishReason": reason})
