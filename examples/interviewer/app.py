"""interviewer: mock interviews for many candidates at once, with speech.

An interview is one run, owned by the candidate (with ``RUNYARD_AUTH=jwt``,
the token's ``sub``), that asks for each answer and waits for it:

- ``interview`` ``{"role", "questions", "language", "answer_timeout_s"}``: for
  each question, asks it (``ctx.ask``: an ``input.requested`` event, the run
  ``waiting`` without a worker until ``POST /v1/runs/{id}/input`` brings
  ``{"answer"}``), then a ``feedback`` event on the answer; then a ``summary``
  event. Every LLM call is a ``ctx.step``: the run executes again after each
  answer, and replays the calls already made instead of paying for them again.

Speech runs as tasks with progress, under caps shared by every process of the
deployment (``RUNYARD_BROKER=redis://...``), because the providers refuse more:

- ``stt_batch`` ``{"chunks": [base64 audio, ...], "language"}``: every chunk
  transcribed, at most 5 in flight (``speech-stt``), a ``progress`` event per chunk;
- ``tts`` ``{"text", "voice"}``: sentence by sentence, at most 26 in flight
  (``speech-tts``), a ``progress`` event per sentence.

The providers' URLs come from ``INTERVIEWER_LLM_URL``, ``INTERVIEWER_STT_URL``
and ``INTERVIEWER_TTS_URL`` (the fakes on loopback by default).

    runyard serve examples.interviewer.app:app     # with the fakes running, see README.md
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import re
import textwrap
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from runyard import RunContext, Runyard, Settings

T = TypeVar("T")
LLM_LIMIT, STT_LIMIT, TTS_LIMIT = "llm", "speech-stt", "speech-tts"
STT_CONCURRENCY, TTS_CONCURRENCY = 5, 26  # what the speech providers allow in flight
MAX_CHUNK_BYTES = 256 * 1024
MAX_SEGMENT_CHARS = 300
ANSWER_TIMEOUT_S = 1800.0  # an interview left unanswered this long ends timed_out
Language = Literal["en", "fr", "de", "es"]

PROMPTS = {
    "question": "TASK: question. You interview a candidate for `role`. Ask question `number` of `of`"
    " in `language`, unlike those already `asked`. Reply with the question only.",
    "feedback": "TASK: feedback. Judge the candidate's `answer` to `question` for `role`. Reply in"
    ' `language` as JSON: {"feedback": "<two sentences>", "score": <1 to 5>}.',
    "summary": "TASK: summary. Summarise the interview `turns` for `role` in `language`: strengths,"
    " gaps and a recommendation, in plain text.",
}


@dataclass(frozen=True, slots=True)
class Providers:
    """Where the LLM and the speech providers are: the fakes on loopback by default."""

    llm_url: str = "http://127.0.0.1:9201/v1"
    stt_url: str = "http://127.0.0.1:9202"
    tts_url: str = "http://127.0.0.1:9203"
    llm_model: str = "interviewer-sim"

    @classmethod
    def from_env(cls) -> Providers:
        env, default = os.environ.get, cls()
        return cls(
            llm_url=env("INTERVIEWER_LLM_URL", default.llm_url),
            stt_url=env("INTERVIEWER_STT_URL", default.stt_url),
            tts_url=env("INTERVIEWER_TTS_URL", default.tts_url),
            llm_model=env("INTERVIEWER_LLM_MODEL", default.llm_model),
        )


class InterviewConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    role: str = Field(min_length=1, max_length=100, description="The role interviewed for")
    questions: int = Field(3, ge=1, le=10, description="How many questions the interview has")
    language: Language = Field("en", description="The interview's language")
    answer_timeout_s: float = Field(
        ANSWER_TIMEOUT_S, gt=0, le=86_400, description="How long each answer may take before the interview ends"
    )


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    answer: str = Field(min_length=1, max_length=4000, description="The candidate's answer (text, or a transcript)")


class SttBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chunks: list[str] = Field(min_length=1, max_length=64, description="Audio chunks in order, each base64")
    language: Language = "en"

    @field_validator("chunks")
    @classmethod
    def _base64_audio(cls, chunks: list[str]) -> list[str]:
        for index, chunk in enumerate(chunks):
            try:
                size = len(base64.b64decode(chunk, validate=True))
            except binascii.Error:
                raise ValueError(f"chunk {index} is not base64") from None
            if not 0 < size <= MAX_CHUNK_BYTES:
                raise ValueError(f"chunk {index} must hold 1 to {MAX_CHUNK_BYTES} bytes of audio")
        return chunks


class Tts(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    text: str = Field(min_length=1, max_length=5000, description="What to say")
    voice: str = Field("alloy", pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="The provider's voice")


def build_app(settings: Settings | None = None, providers: Providers | None = None) -> Runyard:
    """The app on ``settings`` (default: the ``RUNYARD_*`` environment), calling ``providers``."""
    where = providers or Providers.from_env()
    app = Runyard(settings, title="interviewer")
    app.limit(LLM_LIMIT, concurrency=16)
    app.limit(STT_LIMIT, concurrency=STT_CONCURRENCY)
    app.limit(TTS_LIMIT, concurrency=TTS_CONCURRENCY)

    @app.pipeline("interview", timeout_s=120, input_model=InterviewConfig)
    async def interview(ctx: RunContext, config: InterviewConfig) -> dict[str, Any]:
        """Ask each question and wait for its answer (POST /v1/runs/{id}/input with
        {"answer"}; the run waits without a worker), with a `feedback` event on each,
        then a `summary` event. Output {summary, answered, of, scores, average_score, turns}."""
        async with LLM(ctx, where) as llm:
            turns: list[dict[str, Any]] = []
            for number in range(1, config.questions + 1):
                asked = [turn["question"] for turn in turns]
                question: str = await ctx.step("question", llm.question, config, number, asked)
                request = {"number": number, "of": config.questions, "question": question}
                reply: Answer = await ctx.ask(request, schema=Answer, timeout_s=config.answer_timeout_s)
                judged: dict[str, Any] = await ctx.step("feedback", llm.feedback, config, question, reply.answer)
                await ctx.emit("feedback", {"number": number, **judged})
                turns.append({"number": number, "question": question, "answer": reply.answer, **judged})
            summary: str = await ctx.step("summary", llm.summary, config, turns)
        scores = [turn["score"] for turn in turns]
        known = [score for score in scores if score is not None]
        result = {
            "summary": summary,
            "answered": len(turns),
            "of": config.questions,
            "scores": scores,
            "average_score": round(sum(known) / len(known), 2) if known else None,
        }
        await ctx.emit("summary", result)
        return {**result, "turns": turns}

    @app.pipeline("stt_batch", timeout_s=300, input_model=SttBatch)
    async def stt_batch(ctx: RunContext, input: SttBatch) -> dict[str, Any]:
        """Transcribe every chunk (at most 5 in flight across the deployment), with a `progress`
        event per chunk. Output {transcript, segments}."""
        async with httpx.AsyncClient(base_url=where.stt_url, timeout=30) as http:

            async def transcribe(chunk: str) -> str:
                response = await http.post(
                    "/v1/audio/transcriptions", json={"audio": chunk, "language": input.language}
                )
                response.raise_for_status()
                return str(response.json()["text"])

            texts = await each_with_progress(ctx, STT_LIMIT, transcribe, input.chunks, "chunk")
        segments = [{"index": index, "text": text} for index, text in enumerate(texts)]
        return {"transcript": " ".join(text.strip() for text in texts if text.strip()), "segments": segments}

    @app.pipeline("tts", timeout_s=300, input_model=Tts)
    async def tts(ctx: RunContext, input: Tts) -> dict[str, Any]:
        """Speak the text sentence by sentence (at most 26 in flight across the deployment),
        with a `progress` event per sentence. Output {audio_b64, bytes, segments, format}."""
        async with httpx.AsyncClient(base_url=where.tts_url, timeout=30) as http:

            async def speak(sentence: str) -> bytes:
                response = await http.post("/v1/audio/speech", json={"input": sentence, "voice": input.voice})
                response.raise_for_status()
                return response.content

            pieces = await each_with_progress(ctx, TTS_LIMIT, speak, sentences(input.text), "sentence")
        audio = b"".join(pieces)
        return {
            "audio_b64": base64.b64encode(audio).decode(),
            "bytes": len(audio),
            "segments": len(pieces),
            "format": "pcm",
        }

    return app


async def each_with_progress(
    ctx: RunContext, limit: str, work: Callable[[str], Awaitable[T]], items: list[str], what: str
) -> list[T]:
    """``work`` on every item at once, each call under ``limit`` (which makes them wait their
    turn), retried on 429 and 5xx; a `progress` event as each one finishes; results in order.
    The first failure cancels the rest."""
    finished = 0

    async def one(index: int, item: str) -> T:
        nonlocal finished
        result = await ctx.call(limit, work, item, retries=3)
        finished += 1
        await ctx.progress(finished, len(items), f"{what} {index + 1} of {len(items)} done")
        return result

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(index, item)) for index, item in enumerate(items)]
    return [task.result() for task in tasks]


def sentences(text: str) -> list[str]:
    """The text cut after each sentence, and long sentences at word boundaries."""
    pieces = [piece for piece in re.split(r"(?<=[.!?])\s+", text.strip()) if piece]
    return [part for piece in pieces for part in textwrap.wrap(piece, MAX_SEGMENT_CHARS)]


class LLM:
    """The chat-completions endpoint for one run: each task one call under ``llm``."""

    def __init__(self, ctx: RunContext, providers: Providers) -> None:
        self._ctx, self._model = ctx, providers.llm_model
        self._http = httpx.AsyncClient(base_url=providers.llm_url, timeout=60)

    async def __aenter__(self) -> LLM:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def question(self, config: InterviewConfig, number: int, asked: list[str]) -> str:
        data = {**config.model_dump(exclude={"answer_timeout_s"}), "number": number, "of": config.questions}
        return await self._complete("question", {**data, "asked": asked})

    async def feedback(self, config: InterviewConfig, question: str, answer: str) -> dict[str, Any]:
        """``{"feedback", "score"}``, the score 1 to 5, or None when the model ignored the format."""
        data = {"role": config.role, "language": config.language, "question": question, "answer": answer}
        reply = await self._complete("feedback", data)
        try:
            judged = json.loads(reply)
            score = int(judged["score"])
            return {"feedback": str(judged["feedback"]), "score": min(5, max(1, score))}
        except (ValueError, KeyError, TypeError):  # a model that ignored the format: keep its words
            return {"feedback": reply, "score": None}

    async def summary(self, config: InterviewConfig, turns: list[dict[str, Any]]) -> str:
        data = {**config.model_dump(exclude={"answer_timeout_s"}), "of": config.questions, "turns": turns}
        return await self._complete("summary", data)

    async def _complete(self, task: str, data: dict[str, Any]) -> str:
        messages = [{"role": "system", "content": PROMPTS[task]}, {"role": "user", "content": json.dumps(data)}]
        body = {"model": self._model, "messages": messages}

        async def request() -> str:
            response = await self._http.post("/chat/completions", json=body)
            response.raise_for_status()
            return str(response.json()["choices"][0]["message"]["content"])

        return await self._ctx.call(LLM_LIMIT, request, retries=3)


app = build_app()
