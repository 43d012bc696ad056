"""The SSE wire format of the contract, apart from the response plumbing.

    id: <seq>
    event: <type>
    data: <the whole event as JSON on one line>

Frames are padded with a comment line when a proxy needs chunks of a minimum
size before it forwards them.
"""

from __future__ import annotations

from runyard.models import Event

PING = b": ping\n\n"

Frame = tuple[int, bool, bytes]
"""An event as streams send it: ``(seq, is_end, frame)``. A plain tuple of plain
values on purpose: the collector untracks such tuples, so the many frames that
channels keep cost it nothing (kept as objects, they caused 300 ms pauses)."""


def encode(event: Event) -> Frame:
    return (event.seq, event.type == "end", frame(event))


def frame(event: Event) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.seq, event.type.encode(), event.to_json())


def ping(pad_bytes: int = 0) -> bytes:
    return padded(PING, pad_bytes)


def padded(body: bytes, pad_bytes: int) -> bytes:
    """``body`` preceded by a ``:`` comment line that brings it to ``pad_bytes``."""
    missing = pad_bytes - len(body)
    if missing <= 0:
        return body
    # ": " + filler + "\n" is the comment line; it must be at least 3 bytes long
    return b": " + b" " * max(0, missing - 3) + b"\n" + body
