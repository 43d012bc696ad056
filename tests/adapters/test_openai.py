"""``runyard.adapters.openai.ChatClient`` against a fake OpenAI-compatible server
on loopback: every request goes through ``ctx.call`` under a declared limit, and
the ``usage`` the endpoint reports is accounted; the ``chat`` demo uses it when an
endpoint is configured."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from runyard import RunContext, Runyard, Settings
from runyard.adapters.openai import ChatClient, LLMError, estimate_tokens
from runyard.observability.metrics import REGISTRY
from runyard.runtime import Runtime
from tests.adapters.fake_llm import MODEL, FakeLLM, serve_fake_llm
from tests.adapters.runs import run_to_end
from tests.support import make_app


@pytest.fixture
def fake() -> Iterator[tuple[FakeLLM, str]]:
    llm = FakeLLM()
    with serve_fake_llm(llm) as base_url:
        yield llm, base_url


@asynccontextmanager
async def running(base_url: str, **limit: Any) -> AsyncIterator[Runtime]:
    """An app whose ``ask`` pipeline asks the endpoint, streaming or not, running;
    its client's connections are closed afterwards."""
    app = Runyard(Settings(store="memory://"))
    app.limit("llm", **limit)
    async with ChatClient(base_url, model="fake-gpt", api_key="sk-test", limit="llm", retries=2) as llm:

        @app.pipeline("ask")
        async def ask(ctx: RunContext, input: dict[str, Any]) -> dict[str, Any]:
            messages = [{"role": "user", "content": input["question"]}]
            if input.get("stream"):
                reply = await llm.stream(ctx, messages, max_tokens=50)
            else:
                reply = await llm.complete(ctx, messages, max_tokens=50)
            return {"text": reply.text, "finish_reason": reply.finish_reason}

        async with app.running() as rt:
            yield rt


async def test_a_completion_is_one_request_under_the_limit_with_its_usage_accounted(
    fake: tuple[FakeLLM, str],
) -> None:
    llm, base_url = fake
    before = REGISTRY.get_sample_value("runyard_llm_tokens_total", {"limit": "llm", "kind": "output"}) or 0

    async with running(base_url, concurrency=2) as rt:
        done = await run_to_end(rt, "ask", {"question": "ping"})

    assert done.run.status == "succeeded"
    assert done.run.output == {"text": "You said: ping", "finish_reason": "stop"}
    [body] = llm.requests
    assert body["model"] == "fake-gpt" and body["stream"] is False and body["max_tokens"] == 50
    assert body["messages"] == [{"role": "user", "content": "ping"}]
    assert llm.headers[0]["authorization"] == "Bearer sk-test"
    [usage] = done.of_type("usage")
    assert usage == {
        "limit": "llm",
        "model": MODEL,
        "input_tokens": 7,
        "output_tokens": 3,
        "total_tokens": 10,
        "estimated_tokens": estimate_tokens(body["messages"], 50),
    }
    after = REGISTRY.get_sample_value("runyard_llm_tokens_total", {"limit": "llm", "kind": "output"})
    assert after == before + 3


async def test_a_stream_emits_each_delta_as_a_token_and_asks_for_usage(fake: tuple[FakeLLM, str]) -> None:
    llm, base_url = fake
    async with running(base_url) as rt:
        done = await run_to_end(rt, "ask", {"question": "stream me", "stream": True})

    assert done.run.output == {"text": "You said: stream me", "finish_reason": "stop"}
    assert done.of_type("token") == [{"text": "You "}, {"text": "said: "}, {"text": "stream "}, {"text": "me"}]
    assert llm.requests[0]["stream"] is True
    assert llm.requests[0]["stream_options"] == {"include_usage": True}
    [usage] = done.of_type("usage")
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (7, 4, 11)
    assert done.types().index("usage") > done.types().index("token")


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_a_429_is_retried_after_the_wait_the_endpoint_asked_for(fake: tuple[FakeLLM, str], stream: bool) -> None:
    llm, base_url = fake
    llm.fail, llm.retry_after_ms = 1, 300
    async with running(base_url) as rt:
        done = await run_to_end(rt, "ask", {"question": "again", "stream": stream})

    assert done.run.status == "succeeded"
    assert done.run.output["text"] == "You said: again"
    assert len(llm.requests) == 2 and llm.times[1] - llm.times[0] >= 0.3
    assert done.text() == ("You said: again" if stream else "")  # the refused attempt streamed nothing


async def test_the_limit_caps_requests_and_streams_in_flight(fake: tuple[FakeLLM, str]) -> None:
    llm, base_url = fake
    llm.delay_s = 0.1
    async with running(base_url, concurrency=1) as rt:
        runs = [await rt.create_run(f"o{i}", "ask", {"question": f"q{i}", "stream": i % 2 == 0}) for i in range(4)]
        done = [await rt.wait(run, 20) for run in runs]

    assert [run.status for run in done if run is not None] == ["succeeded"] * 4
    assert len(llm.requests) == 4 and llm.max_in_flight == 1


async def test_an_error_answer_fails_the_run_with_what_the_endpoint_said_without_retrying(
    fake: tuple[FakeLLM, str],
) -> None:
    llm, base_url = fake
    llm.error = (400, "model fake-gpt does not exist")
    async with running(base_url) as rt:
        done = await run_to_end(rt, "ask", {"question": "hi"})

    assert done.run.status == "failed" and done.run.error is not None
    assert "400" in done.run.error.message and "model fake-gpt does not exist" in done.run.error.message
    assert len(llm.requests) == 1


async def test_a_stream_broken_after_its_first_tokens_is_not_retried(fake: tuple[FakeLLM, str]) -> None:
    """A retry would stream the reply a second time into the same run."""
    llm, base_url = fake
    llm.break_stream_after = 2
    async with running(base_url) as rt:
        done = await run_to_end(rt, "ask", {"question": "break", "stream": True})

    assert done.run.status == "failed" and done.run.error is not None
    assert LLMError.__name__ in done.run.error.message and "after 2 tokens" in done.run.error.message
    assert done.text() == "You said: " and len(llm.requests) == 1


async def test_the_chat_demo_replies_from_the_configured_endpoint(
    fake: tuple[FakeLLM, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    llm, base_url = fake
    monkeypatch.setenv("RUNYARD_DEMO_SPEED", "0")
    app = make_app(store="memory://", llm_base_url=base_url, llm_model="demo-model", llm_api_key="sk-demo")
    async with app.running() as rt:
        first = await run_to_end(rt, "chat", {"message": "my name is Ada"})
        second = await run_to_end(rt, "chat", {"message": "hello"}, session_id=first.run.session_id)

    assert first.run.output == {"reply": "You said: my name is Ada", "turns": 1}
    assert second.run.output == {"reply": "You said: hello", "turns": 2}
    assert second.text() == "You said: hello"
    assert second.of_type("usage")[0]["model"] == MODEL
    body = llm.requests[1]
    assert body["model"] == "demo-model" and llm.headers[1]["authorization"] == "Bearer sk-demo"
    assert [(m["role"], m["content"]) for m in body["messages"][1:]] == [
        ("user", "my name is Ada"),
        ("assistant", "You said: my name is Ada"),
        ("user", "hello"),
    ]


async def test_the_chat_demo_retries_a_429_under_its_llm_limit(
    fake: tuple[FakeLLM, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    llm, base_url = fake
    llm.fail, llm.retry_after_ms = 1, 100
    monkeypatch.setenv("RUNYARD_DEMO_SPEED", "0")
    async with make_app(store="memory://", llm_base_url=base_url).running() as rt:
        done = await run_to_end(rt, "chat", {"message": "still there?"})

    assert done.run.output == {"reply": "You said: still there?", "turns": 1}
    assert len(llm.requests) == 2
