"""Checking one run's events as they arrive (no I/O): the violations and the tally."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from runyard.cli_view import compact
from runyard.events.sse import SSEFrame, decode_event

KINDS = (
    "gap",
    "duplicate",
    "foreign_marker",
    "tick_order",
    "tick_count",
    "bad_frame",
    "event_after_end",
    "open_after_end",
    "run_failed",
    "snapshot_mismatch",
    "session_mismatch",
    "stream_lost",
    "timeout",
    "http_error",
    "transport_error",
    "bad_response",
)
LISTED = 100  # violations kept with their details; all of them are counted


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str
    session: int
    run_id: str | None
    detail: str


@dataclass(slots=True)
class Tally:
    """Everything measured, shared by all sessions (one event loop, so no locks)."""

    runs: int = 0
    finished: int = 0  # runs followed to their end (or given up on): the live progress's count
    succeeded: int = 0
    events: int = 0
    ticks: int = 0
    reconnects: int = 0
    retries: int = 0
    tick_ms: list[float] = field(default_factory=list)
    create_ms: list[float] = field(default_factory=list)
    by_kind: Counter[str] = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)

    def violate(self, kind: str, session: int, run_id: str | None, detail: str) -> None:
        self.by_kind[kind] += 1
        if len(self.violations) < LISTED:  # a broken server may break every event: keep memory bounded
            self.violations.append(Violation(kind, session, run_id, detail))


def _field(data: Any, key: str) -> Any:
    return data.get(key) if isinstance(data, dict) else None


# -- checking one run's events (no I/O) -------------------------------------------


class RunCheck:
    """One run's events, checked as they arrive: seq, marker, ``i``, and one ``end`` last."""

    def __init__(self, session: int, marker: str, count: int, tally: Tally) -> None:
        self.session, self.marker, self.count, self.tally = session, marker, count, tally
        self.run_id: str | None = None
        self.session_id: str | None = None  # as the run's creation answered
        self.seq = 0  # the last seq received: where a reconnect resumes
        self.end: dict[str, Any] | None = None
        self._ticks = 0
        self._next_i = 0
        self._gaps = 0
        self._after_gap = False  # the tick that follows a gap cannot be judged for order

    @property
    def ended(self) -> bool:
        return self.end is not None

    def violate(self, kind: str, detail: str) -> None:
        self.tally.violate(kind, self.session, self.run_id, detail)

    def frame(self, frame: SSEFrame, received: float) -> None:
        event = decode_event(frame)
        if event is None or frame.id != str(event["seq"]) or not isinstance(event.get("type"), str):
            self.violate("bad_frame", f"id {frame.id!r}, event {frame.event!r}: {frame.data[:120]}")
            return
        self.observe(event, received)

    def observe(self, event: dict[str, Any], received: float) -> None:
        seq, kind = int(event["seq"]), str(event["type"])
        if self.end is not None:
            self.violate("event_after_end", f"seq {seq} ({kind}) after the end at seq {self.seq}")
            return
        if seq <= self.seq:
            self.violate("duplicate", f"seq {seq} ({kind}) after seq {self.seq}")
            return
        if seq > self.seq + 1:
            missing = f"{self.seq + 1}" if seq == self.seq + 2 else f"{self.seq + 1}..{seq - 1}"
            self.violate("gap", f"seq {missing} missing")
            self._gaps += 1
            self._after_gap = True
        self.seq = seq
        self.tally.events += 1
        if kind == "tick":
            self._tick(event.get("data"), received)
        elif kind == "end":
            self._end(event.get("data"))

    def _tick(self, data: Any, received: float) -> None:
        marker = _field(data, "marker")
        if marker != self.marker:  # someone else's tick: its i says nothing about ours
            self.violate("foreign_marker", f"seq {self.seq} carries marker {marker!r}, not {self.marker!r}")
            return
        self._ticks += 1
        self.tally.ticks += 1
        i = _field(data, "i")
        if i != self._next_i and not self._after_gap:  # a gap was reported already
            self.violate("tick_order", f"seq {self.seq} is tick {i!r}, tick {self._next_i} was due")
        self._after_gap = False
        self._next_i = i + 1 if isinstance(i, int) else self._next_i + 1
        sent = _field(data, "t")
        if isinstance(sent, int | float):
            self.tally.tick_ms.append((received - sent) * 1000.0)

    def _end(self, data: Any) -> None:
        self.end = data if isinstance(data, dict) else {}
        status = self.end.get("status")
        if status != "succeeded":
            self.violate("run_failed", f"ended {status}: {compact(self.end.get('error'))}")
            return
        self.tally.succeeded += 1
        if self._ticks != self.count and not self._gaps:
            self.violate("tick_count", f"{self._ticks} ticks of {self.count}")

    def verify(self, snapshot: dict[str, Any]) -> None:
        """The run's snapshot, read after ``end``, must tell the stream's story."""
        assert self.end is not None
        expected = {"status": self.end.get("status"), "last_seq": self.seq, "session_id": self.session_id}
        if self.end.get("status") == "succeeded":
            expected["output"] = {"marker": self.marker, "count": self.count}
        wrong = [
            f"{key} {snapshot.get(key)!r}, not {want!r}" for key, want in expected.items() if snapshot.get(key) != want
        ]
        if wrong:
            self.violate("snapshot_mismatch", "; ".join(wrong))
