"""``parts.Translator``: each runyard event becomes the LangGraph parts its
rule says, each in its fixed slot, whatever modes a stream asks for."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from runyard.events import sse
from runyard.http.routes.langgraph.parts import CUSTOM, LAST, Part, Translator, custom_json
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


DATA = [{"i": 1}, {}, "thinking", ["a", {"b": None}], None, 'tricky ,"ts":"2020" inside', {"type": "mine", "ts": 1}]


@pytest.mark.parametrize("kind", ["graph.custom", "tick", "plan.step", "status", "token", "graph.values", "end"])
@pytest.mark.parametrize("data", DATA)
def test_a_custom_part_relayed_from_the_stored_frame_is_the_one_the_translator_makes(kind: str, data: Any) -> None:
    """Custom parts are built from a frame's stored data without decoding it; the
    part must be the translator's, for every type and shape of data."""
    stored = orjson.dumps(data)
    frame = sse.frame(Event(RUN, 7, kind, stored, 1.7e9))
    assert (sse.frame_type(frame), sse.stored_data(frame)) == (kind.encode(), stored)
    relayed = custom_json(sse.frame_type(frame), sse.stored_data(frame))
    made = [p.data for p in Translator().parts(7, RUN, orjson.loads(frame.split(b"data: ", 1)[1])) if p.slot == CUSTOM]
    if relayed is None:
        assert made == []
    else:
        assert made == [orjson.loads(relayed)]
        sent = encode(Part(7, CUSTOM, "custom", orjson.Fragment(relayed)))
        assert orjson.loads(sent.split(b"data: ")[1]) == made[0]


def test_a_custom_part_relayed_from_data_stored_with_spaces_is_the_same() -> None:
    """PostgreSQL's jsonb gives data back with spaces."""
    assert orjson.loads(custom_json(b"tick", b'{"i": 1, "t": [1, 2]}') or b"") == {"type": "tick", "i": 1, "t": [1, 2]}
    assert orjson.loads(custom_json(b"tick", b"{ }") or b"") == {"type": "tick"}
