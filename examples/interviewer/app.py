"""interviewer: mock interviews for many candidates at once, with speech.

An interview is a runyard session, owned by the candidate (with
``RUNYARD_AUTH=jwt``, the token's ``sub``); its memory holds the configuration,
the questions, the answers and the feedback:

- ``interview_start`` ``{"role", "questions", "language"}``: configures the
  session's interview and asks question 1 (a ``question`` event);
- ``interview_turn`` ``{"answer"}``: a ``feedback`` event on the answer, then
  the next question, until the configured number is reached;
- ``interview_summary`` ``{}``: a summary of this session's answers only.

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
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from runyard import RunContext, Runyard, Settings

T = TypeVar("T")
LLM_LIMIT, STT_LIMIT, TTS_LIMIT = "llm", "speech-stt", "speech-tts"
STT_CONCURRENCY, TTS_CONCURRENCY = 5, 26  # what the speech providers allow in flight
MAX_CHUNK_BYTES = 256 * 1024
MAX_SEGMENT_CHARS = 300
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


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    answer: str = Field(min_length=1, max_length=4000, description="The candidate's answer (text, or a transcript)")


class Nothing(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class InterviewError(Exception):
    """The session's interview cannot do what the run asked (the run fails with this message)."""


@dataclass
class Turn:
    number: int
    question: str
    answer: str | None = None
    feedback: str | None = None
    score: int | None = None


@dataclass
class Interview:
    """A session's interview, as its memory tells it."""

    config: InterviewConfig
    turns: list[Turn] = field(default_factory=list)

    @classmethod
    def of(cls, history: list[dict[str, Any]]) -> Interview:
        configs = [message["config"] for message in history if "config" in message]
        if not configs:
            raise InterviewError("this session has no interview: start one with interview_start")
        # Every question carries the configuration, so a bounded memory never loses it.
        interview = cls(InterviewConfig.model_validate(configs[-1]))
        by_number: dict[int, Turn] = {}
        for message in history:
            kind, number = message.get("kind"), message.get("number")
            if kind == "question" and isinstance(number, int):
                by_number[number] = Turn(number, str(message["content"]))
                interview.turns.append(by_number[number])
            elif number in by_number and kind == "answer":
                by_number[number].answer = str(message["content"])
            elif number in by_number and kind == "feedback":
                by_number[number].feedback, by_number[number].score = str(message["content"]), message.get("score")
        return interview

    @property
    def pending(self) -> Turn | None:
        """The question waiting for its answer, if any."""
        return self.turns[-1] if self.turns and self.turns[-1].answer is None else None

    @property
    def answered(self) -> list[Turn]:
        return [turn for turn in self.turns if turn.answer is not None]


def build_app(settings: Settings | None = None, providers: Providers | None = None) -> Runyard:
    """The app on ``settings`` (default: the ``RUNYARD_*`` environment), calling ``providers``."""
    where = providers or Providers.from_env()
    app = Runyard(settings, title="interviewer")
    app.limit(LLM_LIMIT, concurrency=16)
    app.limit(STT_LIMIT, concurrency=STT_CONCURRENCY)
    app.limit(TTS_LIMIT, concurrency=TTS_CONCURRENCY)

    @app.pipeline("interview_start", timeout_s=60, input_model=InterviewConfig)
    async def interview_start(ctx: RunContext, config: InterviewConfig) -> dict[str, Any]:
        """Configure this session's interview and ask question 1 (a `question` event).
        Output {number, of, question}."""
        history = await ctx.memory.history()
        if any("config" in message for message in history):
            raise InterviewError("this session already has an interview: start another one in a new session")
        async with LLM(ctx, where) as llm:
            question = await llm.question(Interview(config), 1)
        await ctx.memory.append("system", "interview configured", kind="config", config=config.model_dump())
        return await ask(ctx, config, 1, question)

    @app.pipeline("interview_turn", timeout_s=60, input_model=Answer)
    async def interview_turn(ctx: RunContext, input: Answer) -> dict[str, Any]:
        """Answer the pending question: a `feedback` event {number, feedback, score}, then the
        next question, if any. Output {number, feedback, score, next, done}."""
        interview = Interview.of(await ctx.memory.history())
        turn = interview.pending
        if turn is None:
            raise InterviewError("the interview is over: ask for interview_summary")
        await ctx.phase("feedback", "started", number=turn.number)
        async with LLM(ctx, where) as llm:
            feedback, score = await llm.feedback(interview.config, turn.question, input.answer)
            await ctx.emit("feedback", {"number": turn.number, "feedback": feedback, "score": score})
            await ctx.phase("feedback", "done", number=turn.number)
            done = turn.number >= interview.config.questions
            question = None if done else await llm.question(interview, turn.number + 1)
        # The turn enters memory only once all of it succeeded, so a failed run leaves
        # the question pending and can simply be tried again.
        await ctx.memory.append("user", input.answer, kind="answer", number=turn.number)
        await ctx.memory.append("assistant", feedback, kind="feedback", number=turn.number, score=score)
        result: dict[str, Any] = {"number": turn.number, "feedback": feedback, "score": score, "done": done}
        result["next"] = None if question is None else await ask(ctx, interview.config, turn.number + 1, question)
        return result

    @app.pipeline("interview_summary", timeout_s=60, input_model=Nothing)
    async def interview_summary(ctx: RunContext, input: Nothing) -> dict[str, Any]:
        """A summary of this session's answers (a `summary` event). Output {summary, answered,
        of, scores, average_score}."""
        interview = Interview.of(await ctx.memory.history())
        answered = interview.answered
        if not answered:
            raise InterviewError("nothing to summarise: answer a question first")
        await ctx.phase("summary", "started")
        async with LLM(ctx, where) as llm:
            summary = await llm.summary(interview)
        scores = [turn.score for turn in answered]
        known = [score for score in scores if score is not None]
        result = {
            "summary": summary,
            "answered": len(answered),
            "of": interview.config.questions,
            "scores": scores,
            "average_score": round(sum(known) / len(known), 2) if known else None,
        }
        await ctx.emit("summary", result)
        await ctx.memory.append("assistant", summary, kind="summary")
        return result

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


async def ask(ctx: RunContext, config: InterviewConfig, number: int, question: str) -> dict[str, Any]:
    """Put question ``number`` to the candidate: a `question` event, and into memory."""
    asked = {"number": number, "of": config.questions, "question": question}
    await ctx.emit("question", asked)
    await ctx.memory.append("assistant", question, kind="question", number=number, config=config.model_dump())
    return asked


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

    async def question(self, interview: Interview, number: int) -> str:
        config = interview.config
        data = {**config.model_dump(), "number": number, "of": config.questions}
        return await self._complete("question", {**data, "asked": [turn.question for turn in interview.turns]})

    async def feedback(self, config: InterviewConfig, question: str, answer: str) -> tuple[str, int | None]:
        data = {"role": config.role, "language": config.language, "question": question, "answer": answer}
        reply = await self._complete("feedback", data)
        try:
            judged = json.loads(reply)
            score = int(judged["score"])
            return str(judged["feedback"]), min(5, max(1, score))
        except (ValueError, KeyError, TypeError):  # a model that ignored the format: keep its words
            return reply, None

    async def summary(self, interview: Interview) -> str:
        turns = [
            {"number": t.number, "question": t.question, "answer": t.answer, "feedback": t.feedback, "score": t.score}
            for t in interview.answered
        ]
        config = interview.config
        return await self._complete("summary", {**config.model_dump(), "of": config.questions, "turns": turns})

    async def _complete(self, task: str, data: dict[str, Any]) -> str:
        messages = [{"role": "system", "content": PROMPTS[task]}, {"role": "user", "content": json.dumps(data)}]
        body = {"model": self._model, "messages": messages}

        async def request() -> str:
            response = await self._http.post("/chat/completions", json=body)
            response.raise_for_status()
            return str(response.json()["choices"][0]["message"]["content"])

        return await self._ctx.call(LLM_LIMIT, request, retries=3)


app = build_app()
