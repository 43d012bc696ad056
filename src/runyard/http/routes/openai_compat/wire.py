"""OpenAI's chat-completion wire format: the request runyard reads, the
completions and chunks it answers with, and errors in the shape the OpenAI SDKs
parse (``{"error": {"message", "type", "param", "code"}}``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.responses import Response

from runyard.errors import InvalidRequest, PipelineNotFound, RunyardError
from runyard.events.sse import data_line
from runyard.http.answers import errors as runyard_errors
from runyard.http.chat_runs import output_text
from runyard.http.errors import HTTP_CODES
from runyard.http.responses import StrictJSONRoute
from runyard.models import Run
from runyard.session_ids import SESSION_ID
from runyard.validation import describe, where

MAX_MESSAGES = 1024
MAX_TEXT = 1_000_000
STARTED = int(time.time())  # a pipeline's "created": it was loaded when this process started


# -- the request -------------------------------------------------------------------


class _Loose(BaseModel):
    # what real clients send besides (temperature, max_tokens, tools...) is ignored,
    # not refused: a client written for OpenAI must work unchanged
    model_config = ConfigDict(extra="ignore")


class ContentPart(_Loose):
    type: Annotated[str, Field(max_length=64)]
    text: Annotated[str | None, Field(max_length=MAX_TEXT)] = None


class ChatMessage(_Loose):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Annotated[str, Field(max_length=MAX_TEXT)] | Annotated[list[ContentPart], Field(max_length=256)] | None = (
        None
    )

    def text(self) -> str:
        """The message's text: its string, or its text parts joined."""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content or () if part.type == "text")


class StreamOptions(_Loose):
    include_usage: bool = False


class ChatRequest(_Loose):
    model: Annotated[str, Field(min_length=1, max_length=128, description="a pipeline's name")]
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=128,
            pattern=rf"^{SESSION_ID.pattern}$",
            description="the session the run joins (created on first use); none: a new session",
        ),
    ] = None

    def pipeline_input(self) -> dict[str, str]:
        """``{"message": <the last user message's text>}``, as the contract says."""
        for message in reversed(self.messages):
            if message.role == "user":
                return {"message": message.text()}
        raise InvalidRequest("messages: no message has the role user")


# -- the answers -------------------------------------------------------------------


@dataclass(slots=True)
class Usage:
    """The run's ``usage`` events, summed (the adapters emit one per LLM call)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    seen: bool = False

    def add(self, data: Any) -> None:
        if isinstance(data, dict):
            self.prompt_tokens += _count(data.get("input_tokens"))
            self.completion_tokens += _count(data.get("output_tokens"))
            self.seen = True

    def to_json(self) -> dict[str, int] | None:
        if not self.seen:
            return None  # unknown, not zero
        total = self.prompt_tokens + self.completion_tokens
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens, "total_tokens": total}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


@dataclass(slots=True)
class Answer:
    """What a run said, gathered from its events."""

    tokens: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)


def content_of(answer: Answer, output: Any) -> str:
    """The reply: the run's ``token`` events joined, or (a run that streamed
    none) its output, as is when it is a string, else as JSON text."""
    if answer.tokens:
        return "".join(answer.tokens)
    return output_text(output)


def completion(run: Run, answer: Answer, output: Any, session_id: str) -> dict[str, Any]:
    return {
        "id": run.run_id,
        "object": "chat.completion",
        "created": int(run.created_at),
        "model": run.pipeline,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content_of(answer, output), "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": answer.usage.to_json(),
        "system_fingerprint": None,
        "session_id": session_id,  # runyard's: give it back as `user` to continue the conversation
    }


def chunk(run: Run, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    body = {
        "id": run.run_id,
        "object": "chat.completion.chunk",
        "created": int(run.created_at),
        "model": run.pipeline,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        **extra,
    }
    return data_line(body)


def usage_chunk(run: Run, usage: Usage) -> bytes:
    """The last chunk when the client asked ``stream_options.include_usage``: no choices."""
    body = {
        "id": run.run_id,
        "object": "chat.completion.chunk",
        "created": int(run.created_at),
        "model": run.pipeline,
        "choices": [],
        "usage": usage.to_json(),
    }
    return data_line(body)


def model_json(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": STARTED, "owned_by": "runyard"}


# -- errors ------------------------------------------------------------------------


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str


class OpenAIError(BaseModel):
    """Every error answer of these routes: OpenAI's error object (runyard's code and message)."""

    error: OpenAIErrorBody


_MORE = {
    502: "The run failed (its error's code and message); x-should-retry: false",
    504: "The run has not finished within RUNYARD_WAIT_MAX_S; it goes on (x-should-retry: false)",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for these statuses, each OpenAI's error object."""
    described = runyard_errors(*(status for status in statuses if status not in _MORE))
    for status in statuses:
        description = _MORE.get(status) or described[status]["description"]
        described[status] = {"model": OpenAIError, "description": description}
    return described


ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


class AboutParam(RunyardError):
    """``exc`` (same code, status and message), pointing at the request field it is about."""

    def __init__(self, exc: RunyardError, param: str) -> None:
        super().__init__(exc.message)
        self.code, self.status, self.param = exc.code, exc.status, param


class RunFailed(RunyardError):
    """The pipeline ran and failed: its error, told the way OpenAI tells a server error."""

    code = "run_failed"
    status = 502

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def headers(self) -> dict[str, str]:
        return {"x-should-retry": "false"}  # the SDK would create the run again; pipelines retry on their own


class RunUnfinished(RunyardError):
    """The run has not finished within RUNYARD_WAIT_MAX_S; it goes on (``/v1/runs/{id}``)."""

    code = "run_unfinished"
    status = 504

    @property
    def headers(self) -> dict[str, str]:
        return {"x-should-retry": "false"}


def error_body(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_answer(exc: Exception, request: Request) -> Response:
    """``exc`` as OpenAI's error object (runyard's ``code`` and ``message`` kept)."""
    headers: dict[str, str] = {}
    if isinstance(exc, RequestValidationError):
        errors: Sequence[Any] = list(exc.errors())
        if any(error.get("type") == "json_invalid" for error in errors):
            status, body = 400, error_body(400, "invalid_json", "the request body is not valid JSON")
        else:
            body = error_body(422, "invalid_request", describe(errors), where(errors[0]) if errors else None)
            status = 422
    elif isinstance(exc, PipelineNotFound):
        message = f"{exc.message}: the model does not exist or you do not have access to it"
        status, body = 404, error_body(404, "model_not_found", message, "model")
    elif isinstance(exc, RunyardError):
        status, headers = exc.status, exc.headers
        body = error_body(status, exc.code, exc.message, exc.param if isinstance(exc, AboutParam) else None)
    else:
        assert isinstance(exc, HTTPException)
        status = exc.status_code
        body = error_body(status, HTTP_CODES.get(status, "error"), str(exc.detail))
    return Response(orjson.dumps(body), status_code=status, headers=headers or None, media_type="application/json")


class OpenAIRoute(StrictJSONRoute):
    """Answers its errors in OpenAI's shape instead of runyard's envelope (which is a
    subset of it: ``code`` and ``message`` are the same)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def openai_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except (RunyardError, RequestValidationError, HTTPException) as exc:
                return error_answer(exc, request)

        return openai_handler
