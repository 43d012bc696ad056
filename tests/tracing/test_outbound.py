"""Outbound trace context (issue 18 item 4): the HTTP calls runyard makes carry
the W3C ``traceparent`` of the span current when they are made, so that a
model gateway or a service that traces joins the run's trace. A loopback
server records what each request carried: a model call's ``traceparent`` names
the run's trace and its ``limit`` span, a webhook delivery's names the run's
trace and its ``webhook`` span, and the runyard client's names the caller's
span. Without a tracer (or without the otel extra) nothing is added, and
``OTEL_PROPAGATORS=none`` (the standard switch) turns propagation off in a
served runyard that exports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from runyard import RunStatus, Settings
from runyard.client import AsyncClient, Client
from runyard.models import Run, now
from runyard.observability import tracing
from runyard.store._numbering import cancel_group
from runyard.store.memory import MemoryStore
from runyard.webhooks import sender
from runyard.webhooks.outbox import Webhooks
from tests.support import make_app, serve_in_thread
from tests.tracing.app import build_traced_app
from tests.tracing.receiver import Receiver, attributes_of
from tests.tracing.recorder import recording
from tests.tracing.test_export import OWNER, finished, serving

CALLER_TRACE = "8f1a2b3c4d5e6f708192a3b4c5d6e7f8"
CALLER_SPAN = "1122334455667788"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def traceparent_of(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-{span.context.trace_flags:02x}"


async def consulted(model_url: str, trace: str | None = None) -> Run:
    async with build_traced_app(Settings(store="memory://")).running() as runtime:  # type: ignore[call-arg]
        run = await runtime.create_run("alice", "consults", {"model_url": model_url}, trace=trace)
        done = await runtime.wait(run, 20)
    assert done is not None and done.status is RunStatus.SUCCEEDED, done
    return done


async def test_a_model_call_carries_its_limit_span_in_the_callers_trace(exported: InMemorySpanExporter) -> None:
    with recording() as (recorder, url):
        run = await consulted(url, tracing.incoming({"traceparent": TRACEPARENT}))
    sent = [headers.get("traceparent") for headers in recorder.headers("/chat/completions")]
    calls = sorted(named(exported, "limit llm"), key=lambda s: s.start_time or 0)
    assert len(sent) == len(calls) == 2, "a reply, then a stream"
    assert sent == [traceparent_of(call) for call in calls]
    assert run.trace_id == CALLER_TRACE


async def test_a_run_without_a_caller_sends_its_own_trace_id(exported: InMemorySpanExporter) -> None:
    with recording() as (recorder, url):
        run = await consulted(url)
    assert {headers["traceparent"][3:35] for headers in recorder.headers("/chat/completions")} == {run.trace_id}


async def test_without_a_tracer_calls_carry_no_trace_context() -> None:
    with tracing.using(None), recording() as (recorder, url):
        await consulted(url, tracing.incoming({"traceparent": TRACEPARENT}))
        async with AsyncClient(url) as client:
            await client.snapshot("run_x")
    assert len(recorder.headers()) == 3
    assert all("traceparent" not in headers for headers in recorder.headers())


def test_without_the_otel_extra_headers_go_out_as_they_came() -> None:
    code = (
        "import sys; sys.modules['opentelemetry'] = None  # as if runyard[otel] were not installed\n"
        "import httpx\n"
        "from runyard.observability.propagation import inject, outgoing\n"
        "headers = {'Authorization': 'Bearer k'}\n"
        "assert outgoing(headers) is headers\n"
        "request = httpx.Request('POST', 'http://127.0.0.1/', headers=headers)\n"
        "inject(request)\n"
        "assert 'traceparent' not in request.headers\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_a_webhook_delivery_is_a_span_of_the_runs_trace_and_carries_it(exported: InMemorySpanExporter) -> None:
    store = MemoryStore()
    settings = Settings(store="memory://", webhook_secret="whsec_test", webhook_allow_hosts="127.0.0.1")  # type: ignore[call-arg]
    with recording() as (recorder, url):
        run = Run("run_hooked", "ses_1", "alice", "nap", RunStatus.QUEUED, None, now(), webhook=f"{url}/hook")
        run.trace = TRACEPARENT
        await store.create_run(run)
        await store.append([cancel_group(run.run_id, now())])
        async with sender.client() as http:
            assert await Webhooks(settings, store).deliver_due(http) == 1
    ((delivered),) = recorder.headers("/hook")
    (span,) = named(exported, "webhook")
    assert delivered["traceparent"] == traceparent_of(span)
    assert span.kind is SpanKind.CLIENT
    assert span.parent is not None and f"{span.parent.span_id:016x}" == CALLER_SPAN
    assert dict(span.attributes or {}) == {
        "runyard.run.id": "run_hooked",
        "runyard.webhook.attempt": 1,
        "runyard.webhook.result": "delivered",
    }


async def test_the_runyard_client_carries_the_current_span(exported: InMemorySpanExporter) -> None:
    with recording() as (recorder, url), tracing.span("caller"):
        async with AsyncClient(url) as client:
            await client.snapshot("run_x")
        with Client(url) as blocking:
            blocking.snapshot("run_y")
    (caller,) = named(exported, "caller")
    assert [headers["traceparent"] for headers in recorder.headers()] == [traceparent_of(caller)] * 2


async def test_a_run_created_from_a_pipeline_on_another_runyard_continues_the_callers_trace(
    exported: InMemorySpanExporter,
) -> None:
    with serve_in_thread(make_app(store="memory://")) as other:
        async with build_traced_app(Settings(store="memory://")).running() as runtime:  # type: ignore[call-arg]
            caller = await runtime.create_run("alice", "delegates", {"url": other})
            done = await runtime.wait(caller, 20)
            assert done is not None and done.status is RunStatus.SUCCEEDED, done
        async with AsyncClient(other, client_id="delegate") as client:
            created = await client.wait(str(done.output), 20)
    assert created["trace_id"] == caller.trace_id, "the run it created is in the calling run's trace"
    (delegating,) = named(exported, "run delegates")
    (delegated,) = named(exported, "run whoami")  # the other runyard records in this process too
    assert delegated.parent is not None and delegating.context is not None
    assert delegated.parent.span_id == delegating.context.span_id


def test_a_served_runs_model_calls_join_its_exported_trace_unless_propagators_are_none(
    receiver: tuple[Receiver, str], tmp_path: Path
) -> None:
    found, endpoint = receiver
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "20"}
    with recording() as (recorder, url):
        for propagators in ("tracecontext,baggage", "none"):
            (tmp_path / propagators).mkdir()
            server = serving(tmp_path / propagators, **otel, OTEL_PROPAGATORS=propagators)
            try:
                created = httpx.post(
                    f"{server.url}/v1/runs",
                    json={"pipeline": "consults", "input": {"model_url": url}},
                    headers={**OWNER, "traceparent": TRACEPARENT},
                )
                assert created.status_code == 201, created.text
                assert finished(server.url, created.json()["run_id"])["status"] == "succeeded"
                (listed,) = httpx.get(f"{server.url}/v1/runs", headers=OWNER).json()["runs"]
                assert listed["trace_id"] == CALLER_TRACE, "the run list names each run's trace"
            finally:
                server.stop()
        propagated, silent = recorder.headers("/chat/completions")[:2], recorder.headers("/chat/completions")[2:]
    calls = {span.span_id.hex() for _, span in found.named("limit llm")}
    assert {headers["traceparent"][3:35] for headers in propagated} == {CALLER_TRACE}
    assert {headers["traceparent"][36:52] for headers in propagated} <= calls
    assert len(silent) == 2 and all("traceparent" not in headers for headers in silent)
    assert {attributes_of(s.attributes)["runyard.limit.name"] for _, s in found.named("limit llm")} == {"llm"}
