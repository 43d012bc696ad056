"""An event as ``/events`` and SSE ``data:`` lines carry it (``Event.to_json``)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

from runyard.models import Event, rfc3339


def test_an_events_json_holds_its_seq_type_data_and_rfc3339_time() -> None:
    event = Event("run_a", 7, "tick", b'{"i":1,"pad":"x"}', 1_700_000_000.25)
    assert json.loads(event.to_json()) == {
        "seq": 7,
        "type": "tick",
        "data": {"i": 1, "pad": "x"},
        "ts": "2023-11-14T22:13:20.250000Z",
    }


def test_the_time_is_the_same_string_as_everywhere_else_to_the_microsecond() -> None:
    rng = random.Random(7)
    times = [rng.uniform(0, 4_102_444_800) for _ in range(2_000)]
    times += [1_700_000_000.0, 1_700_000_000.999_999_9, 1_699_999_999.000_000_1, 0.5]
    for ts in times:
        written = json.loads(Event("run_a", 1, "tick", b"null", ts).to_json())["ts"]
        assert written == rfc3339(ts)
        parsed = datetime.strptime(written, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert abs(parsed.timestamp() - ts) < 1e-5
