"""runyard events as LangGraph stream parts: the translation, apart from the plumbing.

A run's events become the parts the LangGraph SDKs read (``event: <mode>``,
``data: <chunk>``). Each part has a fixed **slot** among those an event can
make, so its SSE ``id:`` is ``<seq>.<slot>``: a stream resumed from such an id
skips exactly the parts already sent, whichever modes were asked for, with no
gap and no repeat. The mapping, one rule per event type:

=====================  ===================================================
runyard event          parts
=====================  ===================================================
``graph.values``       ``values``: the graph's state (LangGraph pipelines)
``graph.update``       ``updates`` ``{node: update}``
``phase``, ``step``    ``updates`` ``{name: {"status", ...}}`` (a step once done)
``token``              ``messages`` ``[AIMessageChunk, metadata]``
                       (mode ``messages-tuple``); ``messages/metadata``
                       and ``messages/partial`` (mode ``messages``)
``input.requested``    ``values`` and ``updates`` with ``__interrupt__``
others of the          ``custom``
pipeline's own
every event            ``events`` and ``debug``
``end``                the output as ``values`` (unless the graph streamed
                       its state), then ``end``; or ``error``
=====================  ===================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runyard.models import ASK, Run, RunStatus

# the slot of each kind of part, in the order an event's parts are sent
META, VALUES, UPDATES, TUPLE, MESSAGE_META, PARTIAL, CUSTOM, EVENTS, DEBUG, LAST = range(10)
MODES = frozenset({"values", "updates", "messages", "messages-tuple", "custom", "events", "debug"})
INTERRUPT = "__interrupt__"
# runyard's own event types: not the pipeline's, so not ``custom``
RUNTIME_TYPES = frozenset(
    {"status", "end", "error", "step", "input.requested", "input.received", "phase", "token", "graph.interrupt"}
)
_RUNTIME_BYTES = frozenset(kind.encode() for kind in RUNTIME_TYPES)


def custom_json(kind: bytes, data: bytes) -> bytes | None:
    """The ``custom`` part an event of type ``kind`` makes, as JSON, built from
    its stored ``data`` without decoding it; None for a type that makes no such
    part. The same rule as ``Translator.parts``: a graph's ``graph.custom`` data
    as it is, a pipeline's own event as ``{"type": kind, **data}`` (a ``type``
    in its data comes later and wins, as it does in the dict)."""
    if kind == b"graph.custom":
        return data
    if kind in _RUNTIME_BYTES or kind.startswith(b"graph."):
        return None
    if data[:1] != b"{":
        return b'{"type":"%s","data":%s}' % (kind, data)
    rest = data[1:].lstrip()
    return b'{"type":"%s"%s%s' % (kind, b"" if rest[:1] == b"}" else b",", rest)


STATUS = {
    RunStatus.QUEUED: "pending",
    RunStatus.RUNNING: "running",
    RunStatus.WAITING: "pending",  # a sleep; an ask is "interrupted" (``run_status``)
    RunStatus.SUCCEEDED: "success",
    RunStatus.FAILED: "error",
    RunStatus.CANCELLED: "interrupted",
    RunStatus.TIMED_OUT: "timeout",
}


def run_status(run: Run) -> str:
    """The run's status in LangGraph's words; a run waiting for an answer is ``interrupted``."""
    return "interrupted" if asks(run) else STATUS[run.status]


def asks(run: Run) -> bool:
    """Whether the run waits for an answer to ``ctx.ask`` (as a LangGraph run waits on an interrupt)."""
    return run.status is RunStatus.WAITING and run.waiting is not None and run.waiting.kind == ASK


def interrupts_of(run: Run) -> list[dict[str, Any]]:
    """The question the run waits for, as LangGraph interrupts (none unless it asks)."""
    if not asks(run):
        return []
    assert run.waiting is not None
    return [interrupt(run.waiting.id, run.waiting.request)]


def interrupt(ask_id: Any, request: Any) -> dict[str, Any]:
    return {"value": request, "id": ask_id}


def as_values(output: Any) -> dict[str, Any]:
    """A run's output as a state: as it is when a JSON object, else under ``output``."""
    if isinstance(output, dict):
        return output
    return {} if output is None else {"output": output}


@dataclass(slots=True)
class Part:
    """One SSE frame of a LangGraph stream: ``id: <cursor>.<slot>``, ``event: <event>``."""

    cursor: int
    slot: int
    event: str
    data: Any

    @property
    def mode(self) -> str:
        """The stream mode that asks for this part (``metadata``, ``end`` and ``error`` always go)."""
        return _MODE_OF.get(self.slot) or self.event.split("|", 1)[0]  # updates|<ns>: a subgraph's


_MODE_OF = {TUPLE: "messages-tuple", MESSAGE_META: "messages", PARTIAL: "messages"}


@dataclass(slots=True)
class Translator:
    """Turns one stream's events into parts, remembering what a part needs from
    earlier ones (the last state, a message's text so far). Parts of ``modes``
    only: the others are never built (a part's slot does not depend on them)."""

    modes: frozenset[str] = MODES
    run_id: str | None = None  # the run the last event was of (a thread's stream follows many)
    state: dict[str, Any] = field(default_factory=dict)
    streamed_state: bool = False  # the graph sent its state: the output is not sent again as values
    texts: dict[str, str] = field(default_factory=dict)

    def parts(self, cursor: int, run_id: str, event: dict[str, Any]) -> list[Part]:
        kind, data = event.get("type"), event.get("data")
        found: list[tuple[int, str, Any]] = []
        if run_id != self.run_id:
            self.run_id, self.streamed_state, self.texts = run_id, False, {}
        if kind == "graph.values" and isinstance(data, dict) and not data.get("ns"):
            self.state, self.streamed_state = as_values(data.get("values")), True
            found.append((VALUES, "values", self.state))
        elif kind == "graph.update" and isinstance(data, dict):
            ns = data.get("ns")
            mode = "updates|" + "|".join(map(str, ns)) if ns else "updates"
            found.append((UPDATES, mode, {str(data.get("node")): data.get("update")}))
        elif kind in ("phase", "step") and isinstance(data, dict) and (kind == "phase" or data.get("status") == "done"):
            found.append((UPDATES, "updates", {str(data.get("name")): _without(data, "name")}))
        elif kind == "token" and isinstance(data, dict):
            found.extend(self._message(run_id, data))
        elif kind == "input.requested" and isinstance(data, dict):
            asked = [interrupt(data.get("ask_id"), data.get("request"))]
            found.append((VALUES, "values", {**self.state, INTERRUPT: asked}))
            found.append((UPDATES, "updates", {INTERRUPT: asked}))
        elif kind == "graph.custom":
            found.append((CUSTOM, "custom", data))
        elif isinstance(kind, str) and kind not in RUNTIME_TYPES and not kind.startswith("graph."):
            found.append((CUSTOM, "custom", {"type": kind, **(data if isinstance(data, dict) else {"data": data})}))
        if kind != "end":
            if "events" in self.modes:
                found.append((EVENTS, "events", self._stream_event(run_id, event)))
            if "debug" in self.modes:
                debug = {"type": kind, "step": event.get("seq"), "timestamp": event.get("ts"), "payload": data}
                found.append((DEBUG, "debug", debug))
        else:
            found.extend(self._end(data if isinstance(data, dict) else {}))
        return [Part(cursor, slot, name, chunk) for slot, name, chunk in found]

    def _message(self, run_id: str, data: dict[str, Any]) -> list[tuple[int, str, Any]]:
        text = data["text"] if isinstance(data.get("text"), str) else ""
        message_id = str(data.get("message_id") or f"run-{run_id}")
        metadata = {"run_id": run_id, "langgraph_node": data.get("node") or "pipeline"}
        found: list[tuple[int, str, Any]] = []
        if "messages-tuple" in self.modes:
            found.append((TUPLE, "messages", [ai_chunk(message_id, text), metadata]))
        if "messages" in self.modes:
            if message_id not in self.texts:
                found.append((MESSAGE_META, "messages/metadata", {message_id: {"metadata": metadata}}))
            self.texts[message_id] = self.texts.get(message_id, "") + text
            found.append((PARTIAL, "messages/partial", [ai_chunk(message_id, self.texts[message_id])]))
        return found

    def _stream_event(self, run_id: str, event: dict[str, Any]) -> dict[str, Any]:
        """The event as an ``astream_events`` (v2) record: a token is a chat model's chunk."""
        data = event.get("data")
        if event.get("type") == "token" and isinstance(data, dict):
            chunk = ai_chunk(str(data.get("message_id") or f"run-{run_id}"), str(data.get("text") or ""))
            return {"event": "on_chat_model_stream", "name": "runyard", "run_id": run_id, "data": {"chunk": chunk}}
        return {"event": "on_custom_event", "name": event.get("type"), "run_id": run_id, "data": data}

    def _end(self, data: dict[str, Any]) -> list[tuple[int, str, Any]]:
        if data.get("status") == RunStatus.SUCCEEDED.value:
            found: list[tuple[int, str, Any]] = []
            if not self.streamed_state:
                self.state = as_values(data.get("output"))
                found.append((VALUES, "values", self.state))
            return [*found, (LAST, "end", None)]
        return [(LAST, "error", error_of(data))]


def error_of(end: dict[str, Any]) -> dict[str, Any]:
    """A run's end (not a success) as LangGraph's error chunk ``{"error", "message"}``."""
    error: dict[str, Any] = end["error"] if isinstance(end.get("error"), dict) else {}
    code = str(error.get("code") or end.get("status") or "run_failed")
    return {"error": code, "message": str(error.get("message") or f"the run ended {end.get('status')}")}


def ai_chunk(message_id: str, text: str) -> dict[str, Any]:
    """An ``AIMessageChunk`` as LangChain serialises it."""
    return {
        "content": text,
        "additional_kwargs": {},
        "response_metadata": {},
        "type": "AIMessageChunk",
        "name": None,
        "id": message_id,
        "example": False,
        "tool_calls": [],
        "invalid_tool_calls": [],
        "usage_metadata": None,
        "tool_call_chunks": [],
    }


def _without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}
