"""``/v1/ai-sdk`` over HTTP: the chat id is the session, the last user message the
input, the run a UI message stream; bad requests are clear 4xx that create
nothing; resuming finds the chat's unfinished run (204 when there is none,
another owner's included); the client leaving never stops the run.

(The real ``ai`` client reads these streams in ``test_ai_sdk_client.py``.)"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from tests.ai_sdk.conftest import SECRET, build
from tests.support import serve_in_thread

pytestmark = pytest.mark.server


def request_body(chat_id: str, text: str, **extra: Any) -> dict[str, Any]:
    """What DefaultChatTransport POSTs for a first message."""
    message = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}
    return {"id": chat_id, "messages": [message], "trigger": "submit-message", "messageId": None, **extra}


def chat(server: str, owner: str, pipeline: str, body: dict[str, Any]) -> httpx.Response:
    headers = {"X-Client-Id": owner}
    return httpx.post(f"{server}/v1/ai-sdk/{pipeline}", json=body, headers=headers, timeout=10)


def chunks(response: httpx.Response) -> list[dict[str, Any]]:
    """The stream's chunks in order; it must end with ``data: [DONE]``."""
    assert response.text.endswith("\ndata: [DONE]\n\n"), response.text[-200:]
    lines = response.text.removesuffix("data: [DONE]\n\n").split("\n")
    return [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]


def api(server: str, owner: str, path: str) -> httpx.Response:
    return httpx.get(f"{server}{path}", headers={"X-Client-Id": owner}, timeout=10)


def test_a_chat_message_is_a_run_of_the_pipeline_in_the_chats_session(server: str, owner: str, chat_id: str) -> None:
    body = request_body(chat_id, "hello there")
    body["messages"] = [
        {"id": "u0", "role": "user", "parts": [{"type": "text", "text": "an earlier message"}]},
        {"id": "a0", "role": "assistant", "parts": [{"type": "text", "text": "an earlier answer"}]},
        {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hello "}, {"type": "text", "text": "there"}]},
    ]
    assert api(server, owner, f"/v1/sessions/{chat_id}").status_code == 404

    answer = chat(server, owner, "parrot", body)

    assert answer.status_code == 200
    assert answer.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert answer.headers["content-type"].startswith("text/event-stream")
    stream = chunks(answer)
    run_id = stream[0]["messageId"]
    run = api(server, owner, f"/v1/runs/{run_id}").json()
    assert (run["session_id"], run["input"], run["status"]) == (chat_id, {"message": "hello there"}, "succeeded")
    assert api(server, owner, f"/v1/sessions/{chat_id}").status_code == 200, "created on first use"

    again = chunks(chat(server, owner, "parrot", request_body(chat_id, "and again")))
    runs = api(server, owner, f"/v1/runs?session_id={chat_id}").json()["runs"]
    assert {r["run_id"] for r in runs} == {run_id, again[0]["messageId"]}, "the same chat, the same session"


def test_the_stream_is_the_runs_events_as_ui_message_chunks(server: str, owner: str, chat_id: str) -> None:
    stream = chunks(chat(server, owner, "parrot", request_body(chat_id, "one two three")))

    run_id = stream[0]["messageId"]
    text_id = next(c["id"] for c in stream if c["type"] == "text-start")
    assert stream[0] == {"type": "start", "messageId": run_id}
    assert stream[1] == {"type": "start-step"}
    kinds = [c["type"] for c in stream[2:-3]]
    assert kinds == [
        "data-status",
        "data-heard",
        "text-start",
        "text-delta",
        "text-delta",
        "text-delta",
        "data-status",
    ], "tokens as text parts, every other event as a data part, in the run's order"
    deltas = [c["delta"] for c in stream if c["type"] == "text-delta"]
    assert deltas == ["one ", "two ", "three "]
    assert all(c["id"] == text_id for c in stream if c["type"].startswith("text-"))
    heard = next(c for c in stream if c["type"] == "data-heard")
    assert heard["data"] == {"words": 3} and heard["id"].isdigit()
    assert stream[-3:] == [
        {"type": "text-end", "id": text_id},
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "stop"},
    ]


def test_a_failed_run_ends_with_an_error_part(server: str, owner: str, chat_id: str) -> None:
    stream = chunks(chat(server, owner, "boom", request_body(chat_id, "go")))

    errors = [c for c in stream if c["type"] == "error"]
    assert len(errors) == 1 and "the model is on fire" in errors[0]["errorText"]
    assert stream[-3:] == [errors[0], {"type": "finish-step"}, {"type": "finish", "finishReason": "error"}]


def test_a_run_that_streams_nothing_answers_with_its_output(server: str, owner: str, chat_id: str) -> None:
    stream = chunks(chat(server, owner, "quiet", request_body(chat_id, "psst")))

    deltas = [c["delta"] for c in stream if c["type"] == "text-delta"]
    assert deltas == ['{"quietly":"psst"}']


def test_the_callers_trace_context_is_the_runs(server: str, owner: str, chat_id: str) -> None:
    trace_id = uuid.uuid4().hex
    headers = {"X-Client-Id": owner, "traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"}
    answer = httpx.post(f"{server}/v1/ai-sdk/parrot", json=request_body(chat_id, "traced"), headers=headers, timeout=10)

    run_id = chunks(answer)[0]["messageId"]
    assert api(server, owner, f"/v1/runs/{run_id}").json()["trace_id"] == trace_id


# -- bad requests ----------------------------------------------------------------------

BAD_REQUESTS = {
    "not JSON": (b"{", 400, "invalid_json"),
    "no chat id": ({"messages": request_body("x", "hi")["messages"]}, 422, "invalid_request"),
    "a chat id with a slash": (request_body("a/b", "hi"), 422, "invalid_request"),
    "no messages": (request_body("c", "hi", messages=[]), 422, "invalid_request"),
    "an unknown role": (
        request_body("c", "hi", messages=[{"id": "m", "role": "robot", "parts": []}]),
        422,
        "invalid_request",
    ),
    "no user message": (
        request_body("c", "hi", messages=[{"id": "m", "role": "assistant", "parts": [{"type": "text", "text": "x"}]}]),
        422,
        "invalid_request",
    ),
    "an unknown trigger": (request_body("c", "hi", trigger="explode"), 422, "invalid_request"),
    "a chat id of the server's form": (request_body("ses_" + "0" * 24, "hi"), 422, "invalid_request"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_a_bad_request_is_a_clear_4xx_that_creates_nothing(server: str, owner: str, case: str) -> None:
    body, status, code = BAD_REQUESTS[case]
    headers = {"X-Client-Id": owner, "Content-Type": "application/json"}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()

    answer = httpx.post(f"{server}/v1/ai-sdk/parrot", content=content, headers=headers, timeout=10)

    assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), answer.text
    assert answer.json()["error"]["message"]
    assert api(server, owner, "/v1/runs").json()["runs"] == []
    assert api(server, owner, "/v1/sessions").json()["sessions"] == []


def test_an_unknown_pipeline_or_an_input_it_refuses_creates_nothing(server: str, owner: str, chat_id: str) -> None:
    unknown = chat(server, owner, "nope", request_body(chat_id, "hi"))
    body = request_body(chat_id, "hi")
    body["messages"][0]["parts"] = [{"type": "file", "mediaType": "image/png", "url": "data:,"}]  # no text
    refused = chat(server, owner, "strict", body)

    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "pipeline_not_found")
    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "invalid_request")
    assert "message" in refused.json()["error"]["message"]
    assert api(server, owner, f"/v1/sessions/{chat_id}").status_code == 404
    assert api(server, owner, "/v1/runs").json()["runs"] == []


# -- resuming ----------------------------------------------------------------------------


def resume(server: str, owner: str, pipeline: str, chat_id: str) -> httpx.Response:
    return api(server, owner, f"/v1/ai-sdk/{pipeline}/{chat_id}/stream")


def test_a_chat_without_an_unfinished_run_has_nothing_to_resume(server: str, owner: str, chat_id: str) -> None:
    assert resume(server, owner, "parrot", chat_id).status_code == 204, "never used"
    chat(server, owner, "parrot", request_body(chat_id, "done soon"))
    assert resume(server, owner, "parrot", chat_id).status_code == 204, "its run has finished"
    assert resume(server, owner, "parrot", "not a chat id!").status_code == 204
    missing = resume(server, owner, "nope", chat_id)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "pipeline_not_found")


@pytest.fixture
def waiting(server: str, owner: str, chat_id: str) -> Iterator[str]:
    """A run of ``asks`` in the chat, waiting for a person; cancelled afterwards."""
    with httpx.stream(
        "POST",
        f"{server}/v1/ai-sdk/asks",
        json=request_body(chat_id, "may I?"),
        headers={"X-Client-Id": owner},
        timeout=10,
    ) as answer:
        first = next(answer.iter_lines())  # the client reads the start, then leaves
    run_id: str = json.loads(first.removeprefix("data: "))["messageId"]
    wait_for_status(server, owner, run_id, "waiting")
    yield run_id
    httpx.post(f"{server}/v1/runs/{run_id}/cancel", headers={"X-Client-Id": owner}, timeout=10)


def wait_for_status(server: str, owner: str, run_id: str, status: str) -> None:
    deadline = time.monotonic() + 10
    while api(server, owner, f"/v1/runs/{run_id}").json()["status"] != status:
        assert time.monotonic() < deadline, f"run {run_id} never became {status}"
        time.sleep(0.02)


def test_the_client_leaving_does_not_stop_the_run(server: str, owner: str, waiting: str) -> None:
    assert api(server, owner, f"/v1/runs/{waiting}").json()["status"] == "waiting"


def test_resuming_streams_the_unfinished_run_from_its_start_until_it_ends(
    server: str, owner: str, chat_id: str, waiting: str
) -> None:
    url = f"{server}/v1/ai-sdk/asks/{chat_id}/stream"
    with httpx.stream("GET", url, headers={"X-Client-Id": owner}, timeout=10) as answer:
        assert answer.headers["x-vercel-ai-ui-message-stream"] == "v1"
        payloads = (line.removeprefix("data: ") for line in answer.iter_lines() if line.startswith("data: "))
        head = [next(payloads) for _ in range(3)]
        httpx.post(f"{server}/v1/runs/{waiting}/cancel", headers={"X-Client-Id": owner}, timeout=10)
        rest = list(payloads)

    stream = [data if data == "[DONE]" else json.loads(data) for data in head + rest]
    assert stream[:2] == [{"type": "start", "messageId": waiting}, {"type": "start-step"}]
    assert [c["delta"] for c in stream if isinstance(c, dict) and c["type"] == "text-delta"] == ["let me ask "]
    assert stream[-5] == {"type": "text-end", "id": f"{waiting}-text"}
    assert stream[-4]["type"] == "abort", "cancelled: the SDK's abort, not an error"
    assert stream[-3:] == [{"type": "finish-step"}, {"type": "finish", "finishReason": "other"}, "[DONE]"]


def test_another_owner_has_nothing_to_resume_in_a_chat_of_the_same_id(
    server: str, owner: str, chat_id: str, waiting: str
) -> None:
    other = f"other-{owner}"
    assert resume(server, other, "asks", chat_id).status_code == 204

    theirs = chunks(chat(server, other, "parrot", request_body(chat_id, "mine")))

    assert api(server, other, f"/v1/runs/{theirs[0]['messageId']}").json()["session_id"] == chat_id
    mine = api(server, owner, f"/v1/runs?session_id={chat_id}").json()["runs"]
    assert [r["run_id"] for r in mine] == [waiting], "two owners, two sessions of one id"
    url = f"{server}/v1/ai-sdk/asks/{chat_id}/stream"
    with httpx.stream("GET", url, headers={"X-Client-Id": owner}, timeout=10) as still_mine:
        assert still_mine.status_code == 200


# -- auth ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jwt_server() -> Iterator[str]:
    with serve_in_thread(build(auth="jwt", jwt_secret=SECRET)) as url:
        yield url


def test_without_a_valid_token_nothing_is_run_or_resumed(jwt_server: str, chat_id: str) -> None:
    headers = {"Authorization": "Bearer not-a-token"}
    posted = httpx.post(f"{jwt_server}/v1/ai-sdk/parrot", json=request_body(chat_id, "hi"), headers=headers)
    resumed = httpx.get(f"{jwt_server}/v1/ai-sdk/parrot/{chat_id}/stream", headers=headers)

    assert (posted.status_code, posted.json()["error"]["code"]) == (401, "unauthorized")
    assert (resumed.status_code, resumed.json()["error"]["code"]) == (401, "unauthorized")
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    answer = httpx.post(
        f"{jwt_server}/v1/ai-sdk/parrot",
        json=request_body(chat_id, "hi"),
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert chunks(answer)[-1] == {"type": "finish", "finishReason": "stop"}
