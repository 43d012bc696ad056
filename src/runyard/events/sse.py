"""The SSE wire format of the contract, apart from the response plumbing.

    id: <seq>
    event: <type>
    data: <the whole event as JSON on one line>

Frames are padded with a comment line when a proxy needs chunks of a minimum
size before it forwards them. ``SSEParser`` and ``decode_event`` read the same
format back (the Python client uses them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from runyard.models import Event

PING = b": ping\n\n"
DONE = b"data: [DONE]\n\n"  # how OpenAI's streams and the AI SDK's UI message streams end

Frame = tuple[int, bool, bytes]
"""An event as streams send it: ``(seq, is_end, frame)``. A plain tuple of plain
values on purpose: the collector untracks such tuples, so the many frames that
channels keep cost it nothing (kept as objects, they caused 300 ms pauses)."""


def encode(event: Event) -> Frame:
    return (event.seq, event.type == "end", frame(event))


def frame(event: Event) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.seq, event.type.encode(), event.to_json())


def frame_type(frame: bytes) -> bytes:
    """The type of the frame's event (its ``event:`` line)."""
    start = frame.index(b"\nevent: ") + 8
    return frame[start : frame.index(b"\n", start)]


def stored_data(frame: bytes) -> bytes:
    """The ``data`` of the frame's event as it was stored (encoded JSON), read
    off the layout ``frame`` and ``Event.to_json`` write (``ts`` last, a type
    holds no quote), for a relay that forwards an event's data untouched:
    decoding and encoding it again is most of a LangGraph stream's own cost."""
    start = frame.index(b'"data":', frame.index(b"\ndata: {")) + 7
    return frame[start : frame.rindex(b',"ts":"')]


def session_frame(cursor: int, event: Event) -> Frame:
    """An event as a session stream sends it: ``id:`` the stream's cursor, and
    ``run_id`` first in the event object (then ``seq`` and the rest, as a run's)."""
    body = b'{"run_id":"%s",%s' % (event.run_id.encode(), event.to_json()[1:])
    return (cursor, event.type == "end", b"id: %d\nevent: %s\ndata: %s\n\n" % (cursor, event.type.encode(), body))


def data_line(body: Any) -> bytes:
    """``body`` as a frame of ``data:`` alone, the way OpenAI and the AI SDK stream JSON."""
    return b"data: " + orjson.dumps(body) + b"\n\n"


def ping(pad_bytes: int = 0) -> bytes:
    return padded(PING, pad_bytes)


def padded(body: bytes, pad_bytes: int) -> bytes:
    """``body`` preceded by a ``:`` comment line that brings it to ``pad_bytes``."""
    missing = pad_bytes - len(body)
    if missing <= 0:
        return body
    # ": " + filler + "\n" is the comment line; it must be at least 3 bytes long
    return b": " + b" " * max(0, missing - 3) + b"\n" + body


# -- reading it (the client's side) ----------------------------------------------


@dataclass(slots=True)
class SSEFrame:
    event: str
    data: str
    id: str | None


class SSEParser:
    """Incremental SSE decoding: feed it lines without their endings, get whole frames."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None  # the spec keeps the last id across frames

    def feed(self, line: str) -> SSEFrame | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):  # a comment: heartbeat or padding
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None

    def _dispatch(self) -> SSEFrame | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:  # the spec drops frames without data
            return None
        return SSEFrame(event or "message", "\n".join(data), self._id)


def decode_event(frame: SSEFrame) -> dict[str, Any] | None:
    """The event a frame carries: its ``data`` is the whole event (``seq``, ``type``, ``data``, ``ts``)."""
    try:
        value = json.loads(frame.data)
    except ValueError:
        value = frame.data
    if isinstance(value, dict) and isinstance(value.get("seq"), int):
        return value
    if frame.id is None or not frame.id.isdigit():
        return None
    return {"seq": int(frame.id), "type": frame.event, "data": value, "ts": None}
