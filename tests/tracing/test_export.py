"""Traces leave a served runyard over a real socket: ``runyard serve`` in a child
process, configured only by ``OTEL_*`` variables, exports OTLP/HTTP protobuf to
a small receiver here that decodes each request with the official
``opentelemetry-proto`` messages. The caller's ``traceparent`` is continued,
spans not yet exported leave when the process stops on SIGTERM, and an
endpoint that never answers neither slows nor fails a run."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support import ServerProcess, free_port
from tests.tracing.receiver import Receiver, attributes_of

APP = "tests.tracing.app:app"
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
OWNER = {"X-Client-Id": "tracer"}


def serving(tmp_path: Path, **otel: str) -> ServerProcess:
    env = {"RUNYARD_STORE": f"sqlite:///{tmp_path}/runs.db", "RUNYARD_DRAIN_S": "1", **otel}
    return ServerProcess(env, app=APP, output=tmp_path / "server.log").start()


def finished(url: str, run_id: str, timeout_s: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        snapshot: dict[str, Any] = httpx.get(f"{url}/v1/runs/{run_id}", headers=OWNER, timeout=5).json()
        if snapshot["status"] in ("succeeded", "failed", "cancelled", "timed_out"):
            return snapshot
        assert time.monotonic() < deadline, f"run {run_id} did not finish: {snapshot}"
        time.sleep(0.05)


def test_a_served_run_continues_the_callers_trace_and_its_spans_leave_on_sigterm(
    receiver: tuple[Receiver, str], tmp_path: Path
) -> None:
    found, endpoint = receiver
    # a minute between exports: the spans can only arrive through the flush at SIGTERM
    server = serving(
        tmp_path,
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_SERVICE_NAME="runyard-e2e",
        OTEL_BSP_SCHEDULE_DELAY="60000",
    )
    try:
        headers = {**OWNER, "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01", "tracestate": "vendor=opaque"}
        created = httpx.post(f"{server.url}/v1/runs", json={"pipeline": "traced", "input": {}}, headers=headers)
        assert created.status_code == 201, created.text
        assert created.json()["trace_id"] == CALLER_TRACE
        run_id = created.json()["run_id"]
        assert finished(server.url, run_id)["status"] == "succeeded"
        assert found.named("run traced") == [], "nothing is exported before the batch delay or the stop"
    finally:
        server.stop()

    ((service, execution),) = found.named("run traced")
    assert service == "runyard-e2e"
    assert found.content_types == {"application/x-protobuf"}
    assert execution.trace_id.hex() == CALLER_TRACE
    assert execution.parent_span_id.hex() == CALLER_SPAN
    assert execution.trace_state == "vendor=opaque"
    ran = attributes_of(execution.attributes)
    assert ran["runyard.run.id"] == run_id
    assert ran["runyard.pipeline"] == "traced"
    assert ran["gen_ai.usage.input_tokens"] == 15 and ran["gen_ai.usage.output_tokens"] == 7
    ((_, step),) = found.named("step fetch")
    assert step.parent_span_id == execution.span_id and step.trace_id == execution.trace_id
    calls = found.named("limit api")
    assert [attributes_of(s.attributes).get("runyard.call.attempts") for _, s in calls] == [2, None]


def test_a_run_retried_after_its_worker_was_killed_goes_on_in_the_callers_trace(
    receiver: tuple[Receiver, str], tmp_path: Path
) -> None:
    found, endpoint = receiver
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "20", "RUNYARD_LEASE_S": "1"}
    killed = serving(tmp_path, **otel)
    headers = {**OWNER, "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
    created = httpx.post(f"{killed.url}/v1/runs", json={"pipeline": "lingering", "input": None}, headers=headers)
    assert created.status_code == 201, created.text
    run_id = created.json()["run_id"]
    deadline = time.monotonic() + 20
    while not found.named("step before"):  # exported while the run lingers: its worker is mid-execution
        assert time.monotonic() < deadline, "the first execution's step span never arrived"
        time.sleep(0.02)
    killed.kill()

    survivor = serving(tmp_path, **otel)
    try:
        final = finished(survivor.url, run_id)
        assert (final["status"], final["attempt"]) == ("succeeded", 2)
    finally:
        survivor.stop()
    ((_, retried),) = found.named("run lingering")  # the killed execution's span never ended: never sent
    assert retried.trace_id.hex() == CALLER_TRACE and retried.parent_span_id.hex() == CALLER_SPAN
    assert attributes_of(retried.attributes)["runyard.run.attempt"] == 2
    steps = [
        (s.trace_id.hex(), attributes_of(s.attributes)["runyard.step.replayed"]) for _, s in found.named("step before")
    ]
    assert steps == [(CALLER_TRACE, False), (CALLER_TRACE, True)]


def test_an_endpoint_that_never_answers_neither_slows_nor_fails_runs(tmp_path: Path) -> None:
    silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers a byte
    silent.bind(("127.0.0.1", free_port()))
    silent.listen(64)
    try:
        server = serving(
            tmp_path,
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{silent.getsockname()[1]}",
            OTEL_BSP_SCHEDULE_DELAY="10",
        )
        try:
            started = time.monotonic()
            for _ in range(5):
                response = httpx.post(
                    f"{server.url}/v1/runs", json={"pipeline": "traced", "input": {}}, headers=OWNER, timeout=5
                )
                assert response.status_code == 201, response.text
                assert finished(server.url, response.json()["run_id"])["status"] == "succeeded"
            assert time.monotonic() - started < 5, "five runs took longer than their work"
        finally:
            stopping = time.monotonic()
            server.stop()
        assert time.monotonic() - stopping < 15, "the stop waits a bounded time for the spans (5 s), not the exporter"
    finally:
        silent.close()
