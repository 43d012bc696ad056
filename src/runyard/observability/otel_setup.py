"""Exporting runyard's spans: the OpenTelemetry SDK set up from the standard
``OTEL_*`` variables, once per process, when an OTLP endpoint is configured.

``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) turns exporting on:
OTLP/HTTP with protobuf bodies, behind a ``BatchSpanProcessor`` whose queue is
bounded (``OTEL_BSP_MAX_QUEUE_SIZE``, 2048 spans: past it spans are dropped,
memory never grows) and whose export runs on its own thread (an endpoint that
is down or slow costs the event loop nothing). ``OTEL_SERVICE_NAME`` (default
``runyard``), ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` and
``OTEL_BSP_SCHEDULE_DELAY`` are read by the SDK itself. Without an endpoint,
runyard records spans only if the application set a tracer provider of its
own; otherwise tracing stays off.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from runyard.observability import tracing

log = logging.getLogger("runyard.tracing")
ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
FLUSH_S = 5.0  # at most this long waiting for spans to leave at shutdown: a dead endpoint never holds a stop

_provider: Any = None  # this process's, once started


def start() -> None:
    """Set up exporting (or the application's own provider) for this process, once."""
    if _provider is not None or tracing.enabled():
        return
    if any(os.environ.get(name) for name in ENDPOINTS):
        _export()
        return
    try:
        from opentelemetry import trace
    except ImportError:
        return
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        tracing.set_tracer(trace.get_tracer("runyard"))  # the application traces: add to its traces


def _export() -> None:
    global _provider
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but runyard[otel] is not installed: no traces exported")
        return
    _provider = provider(BatchSpanProcessor(OTLPSpanExporter()))
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(_provider)  # the pipelines' own spans join their runs' traces
    tracing.set_tracer(_provider.get_tracer("runyard"))


def provider(processor: Any) -> Any:
    """A tracer provider for runyard's spans, sending them to ``processor``:
    the ``OTEL_*`` resource and sampler, and ids that keep a run's own trace id."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class RunTraceIds(RandomIdGenerator):
        """The trace id decided when the run was created, for a run's root span."""

        keeps_run_traces = True  # what ``tracing`` looks for before relying on it

        def generate_trace_id(self) -> int:
            forced = tracing.FORCED_TRACE_ID.get()
            return forced if forced is not None else super().generate_trace_id()

    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):  # neither names it
        resource = resource.merge(Resource({SERVICE_NAME: "runyard"}))
    # no shutdown at exit: it waits 30 s on an endpoint that does not answer; the
    # runtime's stop flushes (``flush``, bounded) and the export thread is a daemon
    made = TracerProvider(resource=resource, id_generator=RunTraceIds(), shutdown_on_exit=False)
    made.add_span_processor(processor)
    return made


async def flush() -> None:
    """Send the spans not yet exported (a stopping process), waiting ``FLUSH_S`` at most."""
    exporting = _provider
    if exporting is None:
        return
    try:
        await asyncio.wait_for(asyncio.to_thread(exporting.force_flush, int(FLUSH_S * 1000)), FLUSH_S)
    except TimeoutError:
        log.warning("spans not exported within %g s of stopping; dropping them", FLUSH_S)
