"""LangGraph streams over runyard's: a run's (or a thread's) events followed
from a cursor (``Runtime.follow`` / ``follow_session``), turned into parts
(``parts.Translator``) and sent as SSE frames ``id: <seq>.<slot>``.

A run's stream sends ``metadata`` first, then its parts, and closes after
``end`` or ``error``: at the run's end, or where it waits for an answer to
``ctx.ask`` (a LangGraph run ends on an interrupt; the answer, a new request
with ``command.resume``, goes on in a new stream). A ``Last-Event-ID`` resumes
after that part exactly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Collection
from typing import Any

import orjson

from runyard.errors import InvalidCursor
from runyard.events.sse import Frame, frame_type, stored_data
from runyard.http.routes.langgraph.parts import CUSTOM, INTERRUPT, LAST, META, Part, Translator, asks, custom_json
from runyard.models import Run
from runyard.runtime import Runtime

HEARTBEAT = b": heartbeat\n\n"
ALWAYS = frozenset({"metadata", "end", "error"})
EVERY_EVENT = frozenset({"events", "debug"})  # the modes that make a part of every event
PAGE = 1000


def parse_event_id(value: str | None) -> tuple[int, int] | None:
    """A ``Last-Event-ID``: ``<seq>.<slot>`` (a part's id), ``<seq>`` (after that
    whole event), or none / ``-1`` (from the start)."""
    if value is None or value.strip() in ("", "-1"):
        return None
    head, dot, slot = value.strip().partition(".")
    if not (head.isascii() and head.isdigit() and len(head) <= 18) or (
        dot and not (slot.isascii() and slot.isdigit() and int(slot) <= LAST)
    ):
        raise InvalidCursor(f"Last-Event-ID {value[:40]!r} is not an id this stream sent")
    return int(head), int(slot) if dot else LAST


def frame_event(frame: bytes) -> dict[str, Any]:
    """The event object of a runyard SSE frame (``runyard.events.sse``)."""
    event: dict[str, Any] = orjson.loads(frame.split(b"\ndata: ", 1)[1])
    return event


def encode(part: Part) -> bytes:
    name = part.event.replace("\n", " ").replace("\r", " ").encode()
    return b"id: %d.%d\nevent: %s\ndata: %s\n\n" % (part.cursor, part.slot, name, orjson.dumps(part.data))


async def sse_body(parts: AsyncGenerator[list[Part], None], modes: Collection[str]) -> AsyncGenerator[bytes, None]:
    """The parts the client's ``stream_mode`` asks for, as SSE; a heartbeat for
    each empty batch (a silence: the JS SDK measures their cadence to tell a
    half-open connection)."""
    async with contextlib.aclosing(parts):
        async for batch in parts:
            if not batch:
                yield HEARTBEAT
                continue
            chunk = b"".join(encode(part) for part in batch if part.mode in ALWAYS or part.mode in modes)
            if chunk:
                yield chunk


async def run_parts(
    runtime: Runtime, run: Run, cursor: tuple[int, int] | None, modes: Collection[str], start: int = 0
) -> AsyncGenerator[list[Part], None]:
    """The run's parts: without a cursor, ``metadata`` then those of its events
    after ``start``; with one, those after it. Ends after ``end``/``error``."""
    if cursor is None:
        cursor = (start, LAST)
        yield [Part(start, LAST, "metadata", {"run_id": run.run_id, "attempt": run.attempt})]
    seq, slot = cursor
    after = seq if slot >= LAST else seq - 1  # the event the cursor is inside of is read again
    if run.status.finished and after >= run.last_seq:
        return
    translator = Translator(frozenset(modes))
    relay_custom = not EVERY_EVENT & translator.modes  # then a custom event needs no decoding
    asked: Any = None
    async with contextlib.aclosing(runtime.follow(run, after)) as batches:
        async for batch in batches:
            out: list[Part] = []
            for event_seq, _, frame in batch:
                custom = custom_json(frame_type(frame), stored_data(frame)) if relay_custom else None
                if custom is not None:  # its only part: built from the data as stored
                    if (event_seq, CUSTOM) > cursor:
                        out.append(Part(event_seq, CUSTOM, "custom", orjson.Fragment(custom)))
                    continue
                event = frame_event(frame)
                parts = translator.parts(event_seq, run.run_id, event)
                if event.get("type") == "input.requested":
                    asked = (event.get("data") or {}).get("ask_id")
                elif _waits(event) and await _still_asks(runtime, run, asked):
                    parts.append(Part(event_seq, LAST, "end", None))
                out.extend(part for part in parts if (part.cursor, part.slot) > cursor)
                if parts and parts[-1].slot == LAST:
                    yield out
                    return
            if out or not batch:  # an empty batch is a heartbeat; events already sent are not
                yield out


def _waits(event: dict[str, Any]) -> bool:
    """A ``status`` event saying the run now waits for an answer (a sleep has an ``until``)."""
    data = event.get("data")
    if event.get("type") != "status" or not isinstance(data, dict):
        return False
    return data.get("status") == "waiting" and "until" not in data


async def _still_asks(runtime: Runtime, run: Run, ask_id: Any) -> bool:
    """Whether the run still waits for that answer (a replayed log goes on past
    an answered one); for any, when the stream resumed past the question."""
    now = await runtime.get_run(run.owner, run.run_id)
    return asks(now) and now.waiting is not None and ask_id in (None, now.waiting.id)


async def thread_parts(
    frames: AsyncGenerator[list[Frame], None], cursor: tuple[int, int] | None, modes: Collection[str]
) -> AsyncGenerator[list[Part], None]:
    """A session's stream as parts: each run's begin with its ``metadata``."""
    translator = Translator(frozenset(modes))
    async with contextlib.aclosing(frames):
        async for batch in frames:
            out: list[Part] = []
            for position, _, frame in batch:
                event = frame_event(frame)
                run_id = str(event.get("run_id"))
                if run_id != translator.run_id:
                    out.append(Part(position, META, "metadata", {"run_id": run_id}))
                out.extend(translator.parts(position, run_id, event))
            out = [part for part in out if cursor is None or (part.cursor, part.slot) > cursor]
            if out or not batch:  # an empty batch is a heartbeat
                yield out


async def settle(runtime: Runtime, run: Run, timeout_s: float) -> Run:
    """The run once it has ended or waits for an answer, or as it is after ``timeout_s``."""
    if run.status.finished or asks(run):
        return run
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s), contextlib.aclosing(runtime.follow(run, run.last_seq)) as batches:
            async for batch in batches:
                for _, is_end, frame in batch:
                    if is_end:
                        return await runtime.get_run(run.owner, run.run_id)
                    if b"\nevent: status\n" in frame:
                        now = await runtime.get_run(run.owner, run.run_id)
                        if asks(now):
                            return now
    return await runtime.get_run(run.owner, run.run_id)


async def values_of(runtime: Runtime, run: Run) -> dict[str, Any]:
    """What a stream of the whole run showed last as ``values`` (its state; with
    ``__interrupt__`` while it asks), or ``{"__error__": ...}`` if it failed:
    LangGraph's answer to ``runs.wait`` and ``runs.join``."""
    translator = Translator(frozenset({"values"}))
    values: dict[str, Any] = {}
    after = 0
    while after < run.last_seq:
        events = await runtime.store.read_events(run.run_id, after, PAGE)
        if not events:
            break
        for event in events:
            for part in translator.parts(event.seq, run.run_id, orjson.loads(event.to_json())):
                if part.event == "values":
                    values = part.data
                elif part.event == "error":
                    values = {"__error__": part.data}
        after = events[-1].seq
    if not asks(run) and INTERRUPT in values:
        values = {k: v for k, v in values.items() if k != INTERRUPT}  # answered since
    return values
