"""Outbound trace context: the HTTP calls runyard makes (the OpenAI-compatible
``ChatClient``, webhook deliveries, the runyard client) carry the W3C
``traceparent`` of the span current when they are made (a ``run``, ``step`` or
``limit`` span), so that a model gateway or a service that traces adds its
spans to the run's trace.

Headers are written by OpenTelemetry's global propagator, so the standard
``OTEL_PROPAGATORS`` decides what leaves (``tracecontext,baggage`` by default;
``none``: nothing). A run's incoming ``traceparent`` is read whatever it says
(``tracing.incoming``): the run stores its trace in W3C form.

Without the otel extra, or with no span current (tracing off: no endpoint and
no provider of the application's own), headers go out as they came: a
context-variable read per call, nothing more.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

try:
    from opentelemetry import propagate, trace
except ImportError:  # the otel extra is not installed
    trace = None  # type: ignore[assignment]


def _in_a_span() -> bool:
    return trace is not None and trace.get_current_span().get_span_context().is_valid


def outgoing(headers: Mapping[str, str]) -> Mapping[str, str]:
    """``headers`` plus the current span's trace context, or ``headers`` itself
    when no span is current."""
    if not _in_a_span():
        return headers
    carrier = dict(headers)
    propagate.inject(carrier)
    return carrier


def inject(request: httpx.Request) -> None:
    """An ``httpx.Client`` request hook: the current span's trace context on every request."""
    if _in_a_span():
        propagate.inject(request.headers)


async def inject_async(request: httpx.Request) -> None:
    """``inject`` for an ``httpx.AsyncClient``: ``event_hooks={"request": [inject_async]}``."""
    inject(request)
