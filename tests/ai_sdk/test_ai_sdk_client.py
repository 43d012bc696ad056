"""The real AI SDK client (``ai`` 6, tests/node/ai_sdk.mjs) reading /v1/ai-sdk:
``DefaultChatTransport`` sends the chat, ``readUIMessageStream`` builds the
assistant message from the stream, and ``reconnectToStream`` (what useChat's
``resume: true`` calls) picks up an answer the client walked away from: whole,
nothing missing, nothing twice."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.ai_sdk.conftest import NodeClient

pytestmark = pytest.mark.server


def texts(message: dict[str, Any]) -> list[str]:
    return [part["text"] for part in message["parts"] if part["type"] == "text"]


def test_the_sdk_reads_the_answer_as_one_assistant_message(
    server: str, ai_sdk: NodeClient, owner: str, chat_id: str
) -> None:
    answer = ai_sdk("ask", owner, "parrot", chat_id, "one two three")

    message = answer["message"]
    assert answer["errors"] == []
    assert message["role"] == "assistant"
    assert texts(message) == ["one two three "]
    assert [part["data"] for part in message["parts"] if part["type"] == "data-heard"] == [{"words": 3}]
    run = httpx.get(f"{server}/v1/runs/{message['id']}", headers={"X-Client-Id": owner}, timeout=10).json()
    assert (run["session_id"], run["input"]) == (chat_id, {"message": "one two three"}), "the message id is the run's"


def test_the_sdk_hears_a_failed_run_as_an_error(ai_sdk: NodeClient, owner: str, chat_id: str) -> None:
    answer = ai_sdk("ask", owner, "boom", chat_id, "go")

    assert len(answer["errors"]) == 1 and "the model is on fire" in answer["errors"][0]
    assert texts(answer["message"]) == ["almost "]


def test_a_chat_with_nothing_unfinished_resumes_to_nothing(ai_sdk: NodeClient, owner: str, chat_id: str) -> None:
    assert ai_sdk("idle", owner, "slow", chat_id) == {"resumed": None}


def test_an_answer_left_half_way_resumes_whole_each_word_once(ai_sdk: NodeClient, owner: str, chat_id: str) -> None:
    words = [f"w{n}" for n in range(50)]  # ~1.5 s of answer: the client leaves after 3 words

    answer = ai_sdk("resume", owner, "slow", chat_id, " ".join(words), "3")

    before = answer["before"]
    heard_before = "".join(chunk["delta"] for chunk in before if chunk["type"] == "text-delta")
    assert heard_before == "w0 w1 w2 ", "the first request was left mid-answer"
    assert answer["errors"] == []
    resumed = answer["resumed"]
    assert resumed["id"] == before[0]["messageId"], "the same run, the same message"
    assert texts(resumed) == ["".join(f"{word} " for word in words)]
