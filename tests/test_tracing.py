"""OpenTelemetry spans (the ``otel`` extra): one per run and per store batch,
with the run's ids; and nothing at all without a tracer."""

from __future__ import annotations

import asyncio

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from runyard.observability import tracing
from tests.support import make_app


async def finish_one_run() -> str:
    async with make_app(store="memory://").running() as runtime:
        run = await runtime.create_run("tracer", "ticker", {"marker": "traced", "count": 3})
        finished = await runtime.wait(run, 10)
        assert finished is not None and finished.status.value == "succeeded"
        return run.run_id


async def test_a_run_and_its_store_writes_are_spans() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with tracing.using(provider.get_tracer("runyard")):
        run_id = await finish_one_run()
    spans = exporter.get_finished_spans()
    (run_span,) = [s for s in spans if s.name == "runyard.run"]
    assert run_span.attributes is not None
    assert dict(run_span.attributes) == {"run_id": run_id, "pipeline": "ticker", "attempt": 1, "status": "succeeded"}
    writes = [s for s in spans if s.name == "runyard.store.append"]
    assert writes and all(s.attributes and s.attributes["groups"] >= 1 for s in writes)


async def test_without_a_tracer_span_is_one_shared_no_op() -> None:
    with tracing.using(None):
        assert tracing.span("a") is tracing.span("b")
        await asyncio.wait_for(finish_one_run(), 10)
