"""Traces across a fleet on PostgreSQL and Redis: a run created on an API process
with the caller's ``traceparent``, executed by worker processes, asked a
question answered through the other API process, is one trace under the
caller's span; its spans come from the workers, which alone execute runs."""

from __future__ import annotations

import httpx
import pytest

from tests.fleet.conftest import Fleet
from tests.remote import FINISHED, OWNER, wait_until
from tests.tracing.receiver import attributes_of, receiving

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

CALLER_TRACE = "5b8efff798038103d269b633813fc60c"
CALLER_SPAN = "eee19b7ec3c1b174"


def test_a_run_created_on_an_api_process_and_answered_on_another_is_one_trace_of_worker_spans(fleet: Fleet) -> None:
    with receiving() as (found, endpoint):
        fleet.env.update(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_BSP_SCHEDULE_DELAY="50")
        first, second = fleet.start("api"), fleet.start("api")
        fleet.start("worker")
        fleet.start("worker")
        created = httpx.post(
            f"{first.url}/v1/runs",
            json={"pipeline": "stages", "input": {"stages": 2, "ask": True}},
            headers={**OWNER, "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
        )
        assert created.status_code == 201, created.text
        run_id = created.json()["run_id"]
        asked = wait_until(second.url, run_id, {"waiting"})
        assert asked["trace_id"] == CALLER_TRACE
        answered = httpx.post(
            f"{second.url}/v1/runs/{run_id}/input",
            json={"value": {"approve": True}, "ask_id": asked["waiting_for"]["ask_id"]},
            headers=OWNER,
        )
        assert answered.status_code == 202, answered.text
        assert wait_until(first.url, run_id, FINISHED)["status"] == "succeeded"
        fleet.stop()  # every process flushes what it has not exported yet

        executions = [span for _, span in found.named("run stages")]
        assert len(executions) == 2, "one span per execution: before the question, and after the answer"
        assert {s.trace_id.hex() for s in executions} == {CALLER_TRACE}
        assert {s.parent_span_id.hex() for s in executions} == {CALLER_SPAN}
        assert {attributes_of(s.attributes)["runyard.run.id"] for s in executions} == {run_id}
        waited = [e for s in executions for e in s.events if e.name == "waiting"]
        assert [attributes_of(e.attributes) for e in waited] == [{"runyard.waiting.kind": "input"}]
        steps = {(s.name, s.trace_id.hex()) for _, s in found.spans if s.name.startswith("step ")}
        assert steps == {("step stage1", CALLER_TRACE), ("step stage2", CALLER_TRACE)}
