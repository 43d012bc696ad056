"""The spans of a run (contract: "Traces (OpenTelemetry)"), recorded with the
SDK's in-memory exporter: one ``run <pipeline>`` span per execution, its steps
and limits as children, phases and waits as span events, token usage summed,
failures as ERROR; every execution of a run in one trace, the caller's when
it sent a ``traceparent``; and nothing recorded without a tracer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from runyard import RunStatus, Settings
from runyard.models import Run
from runyard.observability import tracing
from runyard.runtime import Runtime
from tests.governance.support import wait_until
from tests.tracing.app import LINGER, build_traced_app

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


@pytest.fixture
async def rt(exported: InMemorySpanExporter) -> AsyncIterator[Runtime]:
    async with build_traced_app(Settings(store="memory://")).running() as runtime:  # type: ignore[call-arg]
        yield runtime


async def finished(rt: Runtime, run: Run) -> Run:
    done = await rt.wait(run, 20)
    assert done is not None and done.status.finished, "the run did not finish"
    return done


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def hex_trace(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


def is_child(child: ReadableSpan, parent: ReadableSpan) -> bool:
    return child.parent is not None and parent.context is not None and child.parent.span_id == parent.context.span_id


async def test_a_run_is_a_span_with_its_ids_and_its_steps_and_limits_are_its_children(
    rt: Runtime, exported: InMemorySpanExporter
) -> None:
    run = await rt.create_run("alice", "traced", {})
    done = await finished(rt, run)
    assert done.status is RunStatus.SUCCEEDED

    (execution,) = named(exported, "run traced")
    assert execution.parent is None, "without a caller's traceparent the run starts a trace of its own"
    assert hex_trace(execution) == run.snapshot()["trace_id"]
    assert attributes(execution) == {
        "runyard.run.id": run.run_id,
        "runyard.pipeline": "traced",
        "runyard.run.attempt": 1,
        "runyard.owner": "alice",
        "runyard.session.id": run.snapshot()["session_id"],
        "runyard.run.status": "succeeded",
        "gen_ai.usage.input_tokens": 15,
        "gen_ai.usage.output_tokens": 7,
    }
    assert execution.status.status_code is StatusCode.UNSET
    phases = [dict(e.attributes or {}) for e in execution.events if e.name == "phase"]
    assert phases == [
        {"runyard.phase.name": "fetch", "runyard.phase.status": "started"},
        {"runyard.phase.name": "fetch", "runyard.phase.status": "done"},
    ]

    (step,) = named(exported, "step fetch")
    assert is_child(step, execution)
    assert attributes(step) == {"runyard.step.name": "fetch", "runyard.step.n": 1, "runyard.step.replayed": False}

    call, held = named(exported, "limit api")
    assert is_child(call, execution) and is_child(held, execution)
    assert attributes(call)["runyard.call.attempts"] == 2, "the first attempt was refused (503)"
    assert attributes(call)["runyard.limit.name"] == "api"
    assert attributes(call)["runyard.limit.wait_ms"] >= 0
    assert set(attributes(held)) == {"runyard.limit.name", "runyard.limit.wait_ms"}, "ctx.limit makes no attempts"


async def test_a_callers_traceparent_is_the_parent_of_every_span_of_the_run(
    rt: Runtime, exported: InMemorySpanExporter
) -> None:
    trace = tracing.incoming({"traceparent": TRACEPARENT, "tracestate": "vendor=opaque"})
    run = await rt.create_run("alice", "traced", {}, trace=trace)
    assert run.snapshot()["trace_id"] == CALLER_TRACE
    await finished(rt, run)

    (execution,) = named(exported, "run traced")
    assert execution.parent is not None and f"{execution.parent.span_id:016x}" == CALLER_SPAN
    assert execution.parent.is_remote
    assert execution.context is not None and execution.context.trace_state.to_header() == "vendor=opaque"
    assert {hex_trace(s) for s in exported.get_finished_spans()} == {CALLER_TRACE}


def test_a_request_without_a_valid_traceparent_brings_no_trace_context() -> None:
    assert tracing.incoming({}) is None
    assert tracing.incoming({"traceparent": "00-not-a-trace-01"}) is None
    assert tracing.incoming({"traceparent": f"00-{'0' * 32}-{CALLER_SPAN}-01"}) is None, "an all-zero trace id"
    assert tracing.incoming({"traceparent": TRACEPARENT}) == TRACEPARENT


async def test_an_answered_question_continues_the_same_trace_in_a_new_run_span(
    rt: Runtime, exported: InMemorySpanExporter
) -> None:
    run = await rt.create_run("alice", "traced", {"ask": True})

    async def waiting() -> bool:
        return (await rt.get_run("alice", run.run_id)).status is RunStatus.WAITING

    await wait_until(waiting)
    waited = await rt.get_run("alice", run.run_id)
    assert waited.waiting is not None
    (first,) = named(exported, "run traced")
    assert [dict(e.attributes or {}) for e in first.events if e.name == "waiting"] == [
        {"runyard.waiting.kind": "input"}
    ]
    assert attributes(first)["gen_ai.usage.input_tokens"] == 10

    await rt.answer("alice", run.run_id, "yes", waited.waiting.id)
    await finished(rt, run)
    first, second = sorted(named(exported, "run traced"), key=lambda s: s.start_time or 0)
    assert hex_trace(first) == hex_trace(second) == run.snapshot()["trace_id"]
    assert attributes(second)["gen_ai.usage.input_tokens"] == 5, "the replayed usage was counted by the first"
    replays = [attributes(s)["runyard.step.replayed"] for s in named(exported, "step fetch")]
    assert replays == [False, True]
    replayed = named(exported, "step fetch")[1]
    assert is_child(replayed, second)


async def test_a_failing_pipeline_sets_error_and_records_its_exception(
    rt: Runtime, exported: InMemorySpanExporter
) -> None:
    run = await rt.create_run("alice", "broken", None)
    assert (await finished(rt, run)).status is RunStatus.FAILED
    (execution,) = named(exported, "run broken")
    assert execution.status.status_code is StatusCode.ERROR
    assert execution.status.description == "pipeline_error: ValueError: the model said no"
    (recorded,) = [dict(e.attributes or {}) for e in execution.events if e.name == "exception"]
    assert recorded["exception.type"] == "ValueError"
    assert recorded["exception.message"] == "the model said no"


async def test_a_run_handed_back_by_a_drain_goes_on_in_the_same_trace(
    exported: InMemorySpanExporter, tmp_path: Path
) -> None:
    settings = Settings(store=f"sqlite:///{tmp_path}/runs.db", drain_s=0.2, cancel_grace_s=1)  # type: ignore[call-arg]
    LINGER["s"] = 60.0
    async with build_traced_app(settings).running() as first:
        run = await first.create_run("alice", "lingering", None)
        await wait_until(lambda: bool(named(exported, "step before")))
    (handed,) = named(exported, "run lingering")
    assert handed.status.status_code is StatusCode.UNSET, "a hand-back is not a failure"

    LINGER["s"] = 0.0
    async with build_traced_app(settings).running() as second:
        done = await finished(second, await second.get_run("alice", run.run_id))
    assert done.status is RunStatus.SUCCEEDED
    handed, resumed = sorted(named(exported, "run lingering"), key=lambda s: s.start_time or 0)
    assert hex_trace(handed) == hex_trace(resumed) == run.snapshot()["trace_id"]
    assert [attributes(s)["runyard.step.replayed"] for s in named(exported, "step before")] == [False, True]


async def test_every_log_line_about_a_run_carries_its_trace_id(rt: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="runyard")
    run = await rt.create_run("alice", "broken", None)
    await finished(rt, run)
    about = [r for r in caplog.records if getattr(r, "run_id", None) == run.run_id]
    assert {r.getMessage().split()[-1] for r in about} >= {"created", "started", "ended"}
    assert {getattr(r, "trace_id", None) for r in about} == {run.snapshot()["trace_id"]}


async def test_without_a_tracer_nothing_is_recorded_and_runs_still_have_a_trace_id() -> None:
    with tracing.using(None):
        assert tracing.step_span("a", 1, replayed=False) is tracing.step_span("b", 2, replayed=True)
        with tracing.run_span(Run("run_x", "ses_x", "o", "p", RunStatus.RUNNING, None, 0.0)) as traced:
            assert traced is None
        async with build_traced_app(Settings(store="memory://")).running() as runtime:  # type: ignore[call-arg]
            run = await runtime.create_run("alice", "traced", {})
            assert (await finished(runtime, run)).status is RunStatus.SUCCEEDED
    trace_id = run.snapshot()["trace_id"]
    assert len(trace_id) == 32 and int(trace_id, 16) and trace_id == trace_id.lower()


async def test_under_an_applications_own_provider_a_runs_spans_still_join_its_trace() -> None:
    exporter = InMemorySpanExporter()
    theirs = TracerProvider()  # not runyard's: its ids are its own
    theirs.add_span_processor(SimpleSpanProcessor(exporter))
    with tracing.using(theirs.get_tracer("runyard")):
        async with build_traced_app(Settings(store="memory://")).running() as runtime:  # type: ignore[call-arg]
            run = await runtime.create_run("alice", "traced", {})
            await finished(runtime, run)
    (execution,) = named(exporter, "run traced")
    assert hex_trace(execution) == run.snapshot()["trace_id"]
    assert execution.parent is not None and execution.parent.is_remote, "under a stand-in parent"
    (step,) = named(exporter, "step fetch")
    assert is_child(step, execution)
