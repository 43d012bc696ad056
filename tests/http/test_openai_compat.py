"""OpenAI-compatible chat completions, spoken to by the real ``openai`` SDK over a
real server: ``model`` is a pipeline, the last user message its input, ``user``
its session; errors come back as the SDK's own exceptions."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import openai
import pytest
from pydantic import BaseModel, ConfigDict

from runyard import RunContext, Runyard, Settings
from tests.support import REPO, make_app, serve_in_thread

SECRET = "s3cret-for-openai-tests-0123456789abcdef"


class Said(BaseModel):
    message: str


class Ticket(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str


def build(**settings: Any) -> Runyard:
    app = Runyard(Settings(store="memory://", **settings))

    @app.pipeline("parrot", input_model=Said)
    async def parrot(ctx: RunContext, input: Said) -> dict[str, Any]:
        """Says the message back, a word at a time."""
        for word in input.message.split(" "):
            await ctx.token(word + " ")
        await ctx.emit("usage", {"input_tokens": 3, "output_tokens": 5})
        await ctx.emit("usage", {"input_tokens": 1, "output_tokens": 2})
        return {"reply": input.message}

    @app.pipeline("quiet", input_model=Said)
    async def quiet(ctx: RunContext, input: Said) -> str:
        """Streams nothing; its output is the answer."""
        return f"quietly: {input.message}"

    @app.pipeline("boom", input_model=Said)
    async def boom(ctx: RunContext, input: Said) -> None:
        await ctx.token("almost ")
        raise RuntimeError("the model is on fire")

    @app.pipeline("asks", input_model=Said)
    async def asks(ctx: RunContext, input: Said) -> Any:
        """Waits for a person's answer (ctx.ask): it does not finish on its own."""
        return await ctx.ask(input.message)

    @app.pipeline("ticket", input_model=Ticket)
    async def ticket(ctx: RunContext, input: Ticket) -> str:
        return input.title

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve_in_thread(build(wait_max_s=1)) as url:
        yield url


def client_of(server: str, who: str | None = None, **options: Any) -> openai.OpenAI:
    """The SDK as a user would configure it, as its own client id (a fresh one by default)."""
    headers = {"X-Client-Id": who or f"c-{uuid.uuid4().hex[:12]}"}
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", default_headers=headers, **options)


def runs_of(server: str, client: openai.OpenAI, **query: str) -> list[dict[str, Any]]:
    headers = {"X-Client-Id": client.default_headers["X-Client-Id"]}
    answer = httpx.get(f"{server}/v1/runs", params=query, headers=headers, timeout=10)  # type: ignore[arg-type]
    runs: list[dict[str, Any]] = answer.json()["runs"]
    return runs


def test_models_are_the_pipelines(server: str) -> None:
    client = client_of(server)
    models = client.models.list()
    assert [model.id for model in models] == ["parrot", "quiet", "boom", "asks", "ticket"]
    assert {model.owned_by for model in models} == {"runyard"}
    assert client.models.retrieve("quiet").id == "quiet"
    with pytest.raises(openai.NotFoundError) as refused:
        client.models.retrieve("gpt-4o")
    assert refused.value.code == "model_not_found"


def test_a_completion_runs_the_pipeline_on_the_last_user_message(server: str) -> None:
    client = client_of(server)
    reply = client.chat.completions.create(
        model="parrot",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "world"}]},
        ],
        temperature=0.2,  # OpenAI's own parameters are accepted and ignored
    )
    assert reply.object == "chat.completion"
    assert reply.model == "parrot"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == "hello world "  # its token events, joined
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (4, 7, 11)
    [run] = runs_of(server, client)
    assert run["run_id"] == reply.id
    assert run["input"] == {"message": "hello world"}
    assert run["status"] == "succeeded"


def test_a_pipeline_that_streams_no_tokens_answers_with_its_output(server: str) -> None:
    client = client_of(server)
    reply = client.chat.completions.create(model="quiet", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "quietly: hi"
    assert reply.usage is None  # the run reported none: unknown, not zero
    [chunks] = [
        list(client.chat.completions.create(model="quiet", messages=[{"role": "user", "content": "hi"}], stream=True))
    ]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "quietly: hi"


def test_a_streamed_completion_sends_each_token_as_a_chunk(server: str) -> None:
    client = client_of(server)
    stream = client.chat.completions.create(
        model="parrot",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert pieces == ["one ", "two ", "three "]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 11
    [run] = runs_of(server, client)
    assert {chunk.id for chunk in chunks} == {run["run_id"]}


async def test_the_async_client_streams_too(server: str) -> None:
    client = openai.AsyncOpenAI(base_url=f"{server}/v1", api_key="unused")
    stream = await client.chat.completions.create(
        model="parrot", messages=[{"role": "user", "content": "async words"}], stream=True
    )
    pieces = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices[0].delta.content]
    assert pieces == ["async ", "words "]
    await client.close()


def test_the_stream_is_openais_sse_ending_with_done(server: str) -> None:
    body = {"model": "parrot", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", f"{server}/v1/chat/completions", json=body, timeout=10) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        frames = [line for line in answer.iter_lines() if line]
    assert all(frame.startswith("data: ") for frame in frames)
    assert frames[-1] == "data: [DONE]"
    assert '"usage"' not in "".join(frames)  # not asked for


def test_user_names_the_session_the_runs_share(server: str) -> None:
    client = client_of(server)
    said = [{"role": "user", "content": "hi"}]
    first = client.chat.completions.create(model="parrot", messages=said, user="conv-1")
    second = client.chat.completions.create(model="parrot", messages=said, user="conv-1")
    assert first.model_extra == second.model_extra == {"session_id": "conv-1"}
    assert {run["run_id"] for run in runs_of(server, client, session_id="conv-1")} == {first.id, second.id}
    apart = client.chat.completions.create(model="parrot", messages=said)
    assert apart.model_extra is not None and apart.model_extra["session_id"].startswith("ses_")
    # the session a completion made can be continued by giving its id back as `user`
    again = client.chat.completions.create(model="parrot", messages=said, user=apart.model_extra["session_id"])
    assert again.model_extra == apart.model_extra


def test_an_unknown_model_is_openais_404_and_creates_nothing(server: str) -> None:
    client = client_of(server)
    with pytest.raises(openai.NotFoundError) as refused:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], user="never")
    error = refused.value
    assert (error.status_code, error.code, error.type, error.param) == (
        404,
        "model_not_found",
        "invalid_request_error",
        "model",
    )
    assert "gpt-4o" in error.message
    assert runs_of(server, client) == []
    headers = {"X-Client-Id": client.default_headers["X-Client-Id"]}
    assert httpx.get(f"{server}/v1/sessions/never", headers=headers, timeout=10).status_code == 404  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([], "messages"),
        ([{"role": "system", "content": "no user here"}], None),
        ([{"role": "wizard", "content": "hi"}], "messages.0.role"),
    ],
)
def test_bad_messages_are_422(server: str, messages: list[Any], param: str | None) -> None:
    client = client_of(server)
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.chat.completions.create(model="parrot", messages=messages)
    assert (refused.value.code, refused.value.type, refused.value.param) == (
        "invalid_request",
        "invalid_request_error",
        param,
    )
    assert runs_of(server, client) == []


def test_a_pipeline_that_takes_no_message_is_422(server: str) -> None:
    client = client_of(server)
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.chat.completions.create(model="ticket", messages=[{"role": "user", "content": "hi"}], user="t-1")
    assert "ticket" in refused.value.message
    assert runs_of(server, client) == []


def test_a_user_that_cannot_be_a_session_id_is_422(server: str) -> None:
    client = client_of(server)
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.chat.completions.create(model="parrot", messages=[{"role": "user", "content": "hi"}], user="a@b.c")
    assert refused.value.param == "user"


def test_a_body_that_is_not_json_is_400_in_openais_shape(server: str) -> None:
    answer = httpx.post(
        f"{server}/v1/chat/completions", content=b"{nope", headers={"Content-Type": "application/json"}, timeout=10
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_json"
    assert answer.json()["error"]["type"] == "invalid_request_error"


def test_a_failed_run_is_an_error_the_sdk_does_not_retry(server: str) -> None:
    client = client_of(server, max_retries=2)
    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(model="boom", messages=[{"role": "user", "content": "hi"}])
    assert failed.value.status_code == 502
    assert failed.value.type == "server_error"
    assert "on fire" in failed.value.message
    assert len(runs_of(server, client)) == 1  # x-should-retry: false, or the SDK would run it thrice


def test_a_run_failing_mid_stream_raises_from_the_stream(server: str) -> None:
    client = client_of(server)
    stream = client.chat.completions.create(model="boom", messages=[{"role": "user", "content": "hi"}], stream=True)
    seen: list[str] = []
    with pytest.raises(openai.APIError) as failed:
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen) == "almost "
    assert "on fire" in failed.value.message


def test_a_run_unfinished_after_wait_max_s_is_504_and_goes_on(server: str) -> None:
    client = client_of(server, max_retries=2)
    with pytest.raises(openai.APIStatusError) as waited:
        client.chat.completions.create(model="asks", messages=[{"role": "user", "content": "approve?"}])
    assert (waited.value.status_code, waited.value.code) == (504, "run_unfinished")
    [run] = runs_of(server, client)  # asked once: the SDK was told not to retry
    assert run["run_id"] in waited.value.message
    assert run["status"] == "waiting"


# -- auth ------------------------------------------------------------------------


def token(sub: str) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def jwt_server() -> Iterator[str]:
    with serve_in_thread(build(auth="jwt", jwt_secret=SECRET)) as url:
        yield url


def sdk(server: str, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key=api_key, max_retries=0)


def test_the_api_key_is_the_bearer_token(jwt_server: str) -> None:
    with pytest.raises(openai.AuthenticationError) as refused:
        sdk(jwt_server, "not-a-token").chat.completions.create(
            model="parrot", messages=[{"role": "user", "content": "hi"}]
        )
    assert (refused.value.code, refused.value.type) == ("unauthorized", "authentication_error")
    with pytest.raises(openai.AuthenticationError):
        sdk(jwt_server, "not-a-token").models.list()
    assert [m.id for m in sdk(jwt_server, token("alice")).models.list()] == [
        "parrot",
        "quiet",
        "boom",
        "asks",
        "ticket",
    ]


def test_owners_choosing_the_same_user_get_sessions_of_their_own(jwt_server: str) -> None:
    said = [{"role": "user", "content": "hi"}]
    for who in ("alice", "bob"):
        sdk(jwt_server, token(who)).chat.completions.create(model="parrot", messages=said, user="shared")
    for who in ("alice", "bob"):
        headers = {"Authorization": f"Bearer {token(who)}"}
        runs = httpx.get(f"{jwt_server}/v1/runs", params={"session_id": "shared"}, headers=headers, timeout=10)
        assert len(runs.json()["runs"]) == 1


# -- the documented snippet ------------------------------------------------------


def test_the_python_snippet_in_docs_clients_runs(capsys: pytest.CaptureFixture[str]) -> None:
    docs = (REPO / "docs" / "clients.md").read_text()
    section = docs.split("## OpenAI SDK", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    with serve_in_thread(make_app(store="memory://")) as url:
        exec(snippet.replace("http://127.0.0.1:8000", url), {})  # the demo's chat pipeline, as the page says
    printed = capsys.readouterr().out.splitlines()
    assert "chat" in printed[0]
    assert "Ada" in printed[1]
    assert "Ada" in printed[2]  # the second turn, streamed, remembers the first: one session
