"""OpenTelemetry traces: every run one trace, whichever processes it crosses.

A run carries its **trace context** from its creation on (``Run.trace``, stored
with the run on every store): the W3C ``traceparent`` of the request that
created it (its ``tracestate`` after a newline), or, without one, a trace of its
own (``trace_context.new_trace``: a fresh trace id with no parent span). Its ``trace_id`` is
in its snapshot and on every log line about it, whether or not anything is
exported. Each execution of the run, on any worker, opens a ``run <pipeline>``
span in that trace; steps and limits open children of the current span.

Spans are recorded only while a tracer is set (``otel_setup.start``: an
``OTEL_EXPORTER_OTLP_*ENDPOINT`` is configured, or the application set a tracer
provider of its own; ``using`` in tests). Otherwise every helper here returns
one shared no-op context manager (or None): no span, no allocation, and event
emission never looks at tracing. Spans are per run, step and call, never per
event.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the otel extra is not installed
    trace = None  # type: ignore[assignment]

from runyard.session_ids import public_session_id
from runyard.trace_context import NO_PARENT_SPAN as NO_PARENT
from runyard.trace_context import new_trace

if TYPE_CHECKING:
    from runyard.models import Run
    from runyard.outcome import Outcome

_NO_SPAN: AbstractContextManager[None] = contextlib.nullcontext()
_tracer: Any = None  # None: tracing is off
TRACED_EVENTS = frozenset({"phase", "usage"})  # the only event types a run span looks at
# The trace id a root span must take (the run's own trace, decided at its creation),
# read by ``otel_setup``'s id generator.
FORCED_TRACE_ID: ContextVar[int | None] = ContextVar("runyard_forced_trace_id", default=None)


def set_tracer(tracer: Any) -> None:
    """Record spans with ``tracer`` from now on (None: none at all)."""
    global _tracer
    _tracer = tracer


def enabled() -> bool:
    return _tracer is not None


@contextlib.contextmanager
def using(tracer: Any) -> Iterator[None]:
    """Record runyard's spans with ``tracer`` (None: none at all) within the block; for tests."""
    saved = _tracer
    set_tracer(tracer)
    try:
        yield
    finally:
        set_tracer(saved)


def span(name: str, **attributes: Any) -> AbstractContextManager[Any]:
    """A span named ``name`` with ``attributes`` around the ``with`` block, or nothing."""
    tracer = _tracer
    if tracer is None:
        return _NO_SPAN
    return tracer.start_as_current_span(name, attributes=attributes)  # type: ignore[no-any-return]


# -- the context a run carries -------------------------------------------------


def incoming(headers: Mapping[str, str]) -> str | None:
    """The trace context of a request's W3C ``traceparent`` (and ``tracestate``)
    headers, as stored with a run; None when it carries no valid one. For every
    endpoint that creates runs: pass its result as ``create_run(trace=...)``."""
    if trace is None or "traceparent" not in headers:
        return None
    propagator = TraceContextTextMapPropagator()
    parent = trace.get_current_span(propagator.extract(headers)).get_span_context()
    if not parent.is_valid:
        return None
    carrier: dict[str, str] = {}
    propagator.inject(carrier, trace.set_span_in_context(trace.NonRecordingSpan(parent)))
    state = carrier.get("tracestate")
    return carrier["traceparent"] + (f"\n{state}" if state else "")


def _parent_context(stored: str) -> tuple[Any, int | None]:
    """The OpenTelemetry context to start a run's span in, and the trace id a
    root span must take (the run's own trace) or None."""
    traceparent, _, state = stored.partition("\n")
    if traceparent[36:52] == NO_PARENT:
        return otel_context.Context(), int(traceparent[3:35], 16)
    carrier = {"traceparent": traceparent, **({"tracestate": state} if state else {})}
    return TraceContextTextMapPropagator().extract(carrier), None


def _root_span(tracer: Any, name: str, stored: str | None, attributes: dict[str, Any], **options: Any) -> Any:
    parent, forced = _parent_context(stored or new_trace())
    if forced is not None and not getattr(getattr(tracer, "id_generator", None), "keeps_run_traces", False):
        # the application's own provider cannot be told the trace id: the span
        # joins the run's trace under a stand-in parent (shown as missing)
        stand_in = trace.SpanContext(forced, (forced & (1 << 64) - 1) or 1, True, trace.TraceFlags(1))
        parent, forced = trace.set_span_in_context(trace.NonRecordingSpan(stand_in)), None
    token = FORCED_TRACE_ID.set(forced)
    try:
        return tracer.start_span(name, context=parent, attributes=attributes, record_exception=False, **options)
    finally:
        FORCED_TRACE_ID.reset(token)


# -- spans -----------------------------------------------------------------------


class RunSpan:
    """The ``run <pipeline>`` span of one execution, with what it learns on the way."""

    __slots__ = ("_input_tokens", "_output_tokens", "span")

    def __init__(self, span: Any) -> None:
        self.span = span
        self._input_tokens = 0
        self._output_tokens = 0

    def event(self, type: str, data: Any) -> None:
        """A ``phase`` or ``usage`` event the run emitted (``TRACED_EVENTS``)."""
        if not isinstance(data, Mapping):
            return
        if type == "phase":
            attributes = {"runyard.phase.name": str(data.get("name")), "runyard.phase.status": str(data.get("status"))}
            self.span.add_event("phase", attributes)
        elif type == "usage":
            self._input_tokens += _count(data.get("input_tokens"))
            self._output_tokens += _count(data.get("output_tokens"))

    def waiting(self, kind: str) -> None:
        """The execution stops to wait (``ctx.ask``: input, ``ctx.sleep``: sleep)."""
        self.span.add_event("waiting", {"runyard.waiting.kind": "input" if kind == "ask" else kind})

    def failed(self, exc: BaseException) -> None:
        self.span.record_exception(exc)

    def ended(self, outcome: Outcome | None) -> None:
        if self._input_tokens or self._output_tokens:
            self.span.set_attribute("gen_ai.usage.input_tokens", self._input_tokens)
            self.span.set_attribute("gen_ai.usage.output_tokens", self._output_tokens)
        if outcome is None:
            return
        self.span.set_attribute("runyard.run.status", outcome.status.value)
        if outcome.error is not None and outcome.status.value in ("failed", "timed_out"):  # cancelled: asked for
            self.span.set_status(trace.StatusCode.ERROR, f"{outcome.error.code}: {outcome.error.message}")


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@contextlib.contextmanager
def run_span(run: Run) -> Iterator[RunSpan | None]:
    """The ``run <pipeline>`` span of this execution of ``run``, current within
    the block, in the run's trace; None (and nothing) while tracing is off."""
    tracer = _tracer
    if tracer is None:
        yield None
        return
    attributes = {
        "runyard.run.id": run.run_id,
        "runyard.pipeline": run.pipeline,
        "runyard.run.attempt": run.attempt,
        "runyard.owner": run.owner,
        "runyard.session.id": public_session_id(run.session_id),
    }
    made = _root_span(tracer, f"run {run.pipeline}", run.trace, attributes)
    try:
        with trace.use_span(made, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            yield RunSpan(made)
    finally:
        made.end()


class LimitSpan:
    """A ``limit <name>`` span: the time waited for permits, and a call's attempts."""

    __slots__ = ("attempts", "span", "wait_ms")

    def __init__(self, span: Any) -> None:
        self.span = span
        self.wait_ms = 0.0
        self.attempts = 0


@contextlib.contextmanager
def limit_span(name: str, *, call: bool) -> Iterator[LimitSpan | None]:
    """A ``limit <name>`` span, child of the current one; None while tracing is off."""
    tracer = _tracer
    if tracer is None:
        yield None
        return
    with tracer.start_as_current_span(f"limit {name}", attributes={"runyard.limit.name": name}) as made:
        traced = LimitSpan(made)
        try:
            yield traced
        finally:
            made.set_attribute("runyard.limit.wait_ms", round(traced.wait_ms, 3))
            if call:
                made.set_attribute("runyard.call.attempts", traced.attempts)


def step_span(name: str, n: int, *, replayed: bool) -> AbstractContextManager[Any]:
    """A ``step <name>`` span, child of the current one; nothing while tracing is off."""
    return span(f"step {name}", **{"runyard.step.name": name, "runyard.step.n": n, "runyard.step.replayed": replayed})


@contextlib.contextmanager
def webhook_span(run: Run, attempt: int) -> Iterator[Any]:
    """A ``webhook`` span (a client call) in ``run``'s trace, current within the
    block, for one delivery attempt of its final snapshot: the delivery carries
    its trace context. None (and nothing) while tracing is off."""
    tracer = _tracer
    if tracer is None:
        yield None
        return
    attributes = {"runyard.run.id": run.run_id, "runyard.webhook.attempt": attempt}
    made = _root_span(tracer, "webhook", run.trace, attributes, kind=trace.SpanKind.CLIENT)
    try:
        with trace.use_span(made, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            yield made
    finally:
        made.end()
