"""``parts.Translator``: each runyard event becomes the LangGraph parts its
rule says, each in its fixed slot, whatever modes a stream asks for."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from runyard.events import sse
from runyard.http.routes.langgraph.parts import CUSTOM, LAST, Part, Translator
from runyard.http.routes.langgraph.streams import encode, parse_event_id
from runyard.models import Event

RUN = "run_0123456789abcdef01234567"


def parts_of(*events: dict[str, Any]) -> list[tuple[str, str, Any]]:
    translator = Translator()
    return [
        (f"{p.cursor}.{p.slot}", p.mode, p.data)
        for seq, event in enumerate(events, 1)
        for p in translator.parts(seq, RUN, {"seq": seq, "ts": "t", **event})
        if p.mode not in ("events", "debug")
    ]


def test_a_subgraphs_update_is_sent_in_updates_mode_under_its_namespace() -> None:
    [(_, mode, data)] = parts_of({"type": "graph.update", "data": {"node": "n", "update": {"x": 1}, "ns": ["sub:1"]}})
    assert (mode, data) == ("updates", {"n": {"x": 1}})


def test_a_typed_custom_payload_comes_back_as_the_graph_wrote_it() -> None:
    typed = parts_of({"type": "plan.step", "data": {"step": "outline"}})
    untyped = parts_of({"type": "graph.custom", "data": "thinking"})
    assert [data for _, _, data in typed + untyped] == [{"type": "plan.step", "step": "outline"}, "thinking"]


def test_the_graphs_streamed_state_is_not_sent_again_from_the_output() -> None:
    state = {"messages": ["hi"]}
    sent = parts_of(
        {"type": "graph.values", "data": {"values": state}},
        {"type": "end", "data": {"status": "succeeded", "output": {"other": 1}}},
    )
    assert [(mode, data) for _, mode, data in sent] == [("values", state), ("end", None)]


def test_a_run_that_did_not_succeed_ends_with_its_error() -> None:
    [(part_id, mode, data)] = parts_of(
        {"type": "end", "data": {"status": "cancelled", "error": {"code": "cancelled", "message": "by you"}}}
    )
    assert (part_id, mode, data) == (f"1.{LAST}", "error", {"error": "cancelled", "message": "by you"})


def test_a_question_is_an_interrupt_over_the_last_state() -> None:
    sent = parts_of(
        {"type": "graph.values", "data": {"values": {"draft": "d"}}},
        {"type": "input.requested", "data": {"ask_id": "ask_1", "request": "ok?", "schema": None}},
    )
    interrupt = [{"value": "ok?", "id": "ask_1"}]
    assert sent[1:] == [
        ("2.1", "values", {"draft": "d", "__interrupt__": interrupt}),
        ("2.2", "updates", {"__interrupt__": interrupt}),
    ]


def test_event_ids_resume_after_a_part_a_whole_event_or_from_the_start() -> None:
    assert parse_event_id("12.3") == (12, 3)
    assert parse_event_id("12") == (12, LAST)
    assert parse_event_id("-1") is None and parse_event_id(None) is None


@pytest.mark.parametrize(
    "data",
    [{"type": "tick", "i": 1}, "thinking", ["a", {"b": None}], 'tricky ,"ts":"2020" inside', {"ts": "x", "data": 1}],
)
def test_a_graphs_custom_event_is_relayed_with_its_data_exactly_as_stored(data: Any) -> None:
    stored = orjson.dumps(data)
    frame = sse.frame(Event(RUN, 7, "graph.custom", stored, 1.7e9))
    assert sse.stored_data(frame, b"graph.custom") == stored
    assert orjson.loads(encode(Part(7, CUSTOM, "custom", orjson.Fragment(stored))).split(b"data: ")[1]) == data
    assert sse.stored_data(frame, b"graph.values") is None
    assert sse.stored_data(sse.frame(Event(RUN, 8, "graph.customs", stored, 1.7e9)), b"graph.custom") is None
