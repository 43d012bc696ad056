"""An OpenAI-compatible chat client whose calls go through a runyard limit.

    app.limit("llm", rpm=500, tpm=90_000, concurrency=20)
    llm = ChatClient("http://127.0.0.1:8080/v1", model="...", api_key=...)
    reply = await llm.complete(ctx, [{"role": "user", "content": "hi"}])
    reply = await llm.stream(ctx, messages)     # the same, streaming `token` events

Every request is ``ctx.call(limit, ...)``: it waits its turn under the limit's
caps and windows (taking an estimate of its tokens from the ``tpm`` window up
front) and is retried on 429, 5xx and transport errors, after the
``retry-after-ms`` / ``Retry-After`` the endpoint asked for. A stream is retried
only until its first token: after that a failure ends the call (``LLMError``)
rather than repeat text the run has already streamed.

The endpoint's ``usage`` becomes a ``usage`` event ``{"limit", "model",
"input_tokens", "output_tokens", "total_tokens", "estimated_tokens"}`` and the
counter ``runyard_llm_tokens_total{limit,kind}``. Each request carries the
trace context of its ``limit`` span (``observability.propagation``): a gateway
that traces joins the run's trace. Needs no extra: only httpx.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
import orjson
from prometheus_client import Counter

from runyard.context import RunContext
from runyard.errors import ConfigurationError, RunyardError
from runyard.observability.metrics import REGISTRY
from runyard.observability.propagation import outgoing
from runyard.settings import Settings

__all__ = ["ChatClient", "Completion", "LLMError", "Usage", "estimate_tokens"]

Message = Mapping[str, Any]

LLM_TOKENS = Counter(
    "runyard_llm_tokens_total",
    "Tokens OpenAI-compatible endpoints reported using, by limit and kind (input, output)",
    ["limit", "kind"],
    registry=REGISTRY,
)


class LLMError(RunyardError):
    """The endpoint's answer could not be used: no reply in it, an error in its
    stream, or a stream that broke after some of its tokens were emitted."""

    code = "llm_error"


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one completion used, as the endpoint reported them."""

    input_tokens: int
    output_tokens: int
    total_tokens: int

    @classmethod
    def parse(cls, data: Any) -> Usage | None:
        """From an OpenAI ``usage`` object; None if there is none."""
        if not isinstance(data, Mapping):
            return None
        prompt, completion = _count(data.get("prompt_tokens")), _count(data.get("completion_tokens"))
        return cls(prompt, completion, _count(data.get("total_tokens")) or prompt + completion)


@dataclass(frozen=True, slots=True)
class Completion:
    """One assistant reply: its text, why it stopped, and what it cost."""

    text: str
    finish_reason: str | None = None
    model: str | None = None
    usage: Usage | None = None
    response: dict[str, Any] | None = None  # the whole JSON answer (not kept for a stream)


def estimate_tokens(messages: Sequence[Message], max_tokens: int | None = None) -> int:
    """A cautious guess of a request's tokens before the endpoint counts them:
    about four characters a token, a few per message, plus the reply's cap."""
    chars = sum(len(_content_text(message.get("content"))) for message in messages)
    return math.ceil(chars / 4) + 4 * len(messages) + 3 + (max_tokens or 0)


class ChatClient:
    """A client of one OpenAI-compatible ``/chat/completions`` endpoint, used from
    pipelines; share one for many runs, and close it (or ``async with`` it)."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        api_key: str | None = None,
        limit: str = "llm",
        retries: int = 3,
        timeout_s: float = 60.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/chat/completions"
        self.model = model
        self.limit = limit
        self.retries = retries
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> ChatClient:
        """The client of ``RUNYARD_LLM_BASE_URL`` with ``RUNYARD_LLM_MODEL`` and ``RUNYARD_LLM_API_KEY``."""
        if not settings.llm_base_url:
            raise ConfigurationError("no LLM endpoint is configured: set RUNYARD_LLM_BASE_URL")
        return cls(settings.llm_base_url, model=settings.llm_model, api_key=settings.llm_api_key, **options)

    async def complete(
        self, ctx: RunContext, messages: Sequence[Message], *, tokens: int | None = None, **params: Any
    ) -> Completion:
        """One reply to ``messages``, under the limit; ``params`` (``temperature``,
        ``max_tokens``, ...) join the request body. ``tokens`` overrides the estimate."""
        body = self._body(messages, params, stream=False)
        estimate = tokens if tokens is not None else estimate_tokens(messages, _max_tokens(params))

        async def attempt() -> Completion:
            response = await self._http.post(self.url, json=body, headers=outgoing(self._headers))
            _raise_for_status(response)
            return _parse_completion(response)

        completion = await ctx.call(self.limit, attempt, retries=self.retries, tokens=estimate)
        await self._account(ctx, completion, estimate)
        return completion

    async def stream(
        self, ctx: RunContext, messages: Sequence[Message], *, tokens: int | None = None, **params: Any
    ) -> Completion:
        """``complete``, streaming the reply's text as ``token`` events as it comes."""
        body = self._body(messages, params, stream=True)
        body.setdefault("stream_options", {"include_usage": True})
        estimate = tokens if tokens is not None else estimate_tokens(messages, _max_tokens(params))
        streamed = 0  # tokens emitted so far, over every attempt

        async def attempt() -> Completion:
            nonlocal streamed
            text: list[str] = []
            finish_reason: str | None = None
            model: str | None = None
            usage: Usage | None = None
            try:
                headers = outgoing(self._headers)  # the `limit` span's trace context: a gateway joins the trace
                async with self._http.stream("POST", self.url, json=body, headers=headers) as response:
                    if response.is_error:
                        await response.aread()
                        _raise_for_status(response)
                    async for chunk in _sse_chunks(response):
                        model = chunk.get("model") or model
                        usage = Usage.parse(chunk.get("usage")) or usage
                        for choice in chunk.get("choices") or ():
                            if choice.get("index", 0) != 0:
                                continue
                            finish_reason = choice.get("finish_reason") or finish_reason
                            piece = _content_text((choice.get("delta") or {}).get("content"))
                            if piece:
                                text.append(piece)
                                streamed += 1
                                await ctx.token(piece)
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                if streamed:  # a retry would stream the reply again: stop here instead
                    raise LLMError(f"the LLM stream broke after {streamed} tokens: {exc}") from exc
                raise
            return Completion("".join(text), finish_reason, model, usage)

        completion = await ctx.call(self.limit, attempt, retries=self.retries, tokens=estimate)
        await self._account(ctx, completion, estimate)
        return completion

    async def aclose(self) -> None:
        """Close the connections, unless the ``http`` client was given."""
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _body(self, messages: Sequence[Message], params: Mapping[str, Any], *, stream: bool) -> dict[str, Any]:
        return {"model": self.model, **params, "messages": [dict(m) for m in messages], "stream": stream}

    async def _account(self, ctx: RunContext, completion: Completion, estimate: int) -> None:
        usage = completion.usage
        if usage is None:
            return
        LLM_TOKENS.labels(self.limit, "input").inc(usage.input_tokens)
        LLM_TOKENS.labels(self.limit, "output").inc(usage.output_tokens)
        await ctx.emit(
            "usage",
            {
                "limit": self.limit,
                "model": completion.model or self.model,
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "total_tokens": usage.total_tokens,
                "estimated_tokens": estimate,
            },
        )


async def _sse_chunks(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of an OpenAI stream's ``data:`` lines, up to ``[DONE]``."""
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue  # blank separators, comments, event names
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise LLMError(f"the LLM stream sent something that is not JSON: {payload[:200]!r}") from exc
        if not isinstance(chunk, dict):
            continue
        if error := chunk.get("error"):
            message = error.get("message") if isinstance(error, Mapping) else error
            raise LLMError(f"the LLM stream failed: {message}")
        yield chunk


def _raise_for_status(response: httpx.Response) -> None:
    """``HTTPStatusError`` for an error answer, saying what the endpoint said
    (``ctx.call`` retries it by status and reads its ``Retry-After``)."""
    if response.is_error:
        raise httpx.HTTPStatusError(
            f"{response.status_code} {response.reason_phrase} from {response.url}: {response.text[:300]}",
            request=response.request,
            response=response,
        )


def _parse_completion(response: httpx.Response) -> Completion:
    try:
        data = response.json()
        choice = data["choices"][0]
        content = choice["message"].get("content")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise LLMError(f"the LLM endpoint answered without a reply: {response.text[:200]!r}") from exc
    return Completion(
        _content_text(content),
        choice.get("finish_reason"),
        data.get("model"),
        Usage.parse(data.get("usage")),
        data,
    )


def _content_text(content: Any) -> str:
    """A message's text: its string content, or the text of its content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    return ""


def _max_tokens(params: Mapping[str, Any]) -> int | None:
    value = params.get("max_completion_tokens", params.get("max_tokens"))
    return value if isinstance(value, int) else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0
