"""OpenTelemetry spans for runs, store writes and limit waits.

With the ``otel`` extra installed (``pip install 'runyard[otel]'``), ``span``
opens a span on runyard's tracer, which reports to whatever tracer provider
the application configures (none: OpenTelemetry's no-op). Without it, ``span``
returns one shared no-op context manager: no import, no allocation, nothing
recorded. Spans are opened per run and per store batch, never per event.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

try:
    from opentelemetry import trace
except ImportError:  # the otel extra is not installed
    trace = None  # type: ignore[assignment]

_NO_SPAN: AbstractContextManager[None] = contextlib.nullcontext()
_tracer: Any = trace.get_tracer("runyard") if trace is not None else None


def span(name: str, **attributes: Any) -> AbstractContextManager[Any]:
    """A span named ``name`` with ``attributes`` around the ``with`` block, or nothing."""
    tracer = _tracer
    if tracer is None:
        return _NO_SPAN
    return tracer.start_as_current_span(name, attributes=attributes)  # type: ignore[no-any-return]


@contextlib.contextmanager
def using(tracer: Any) -> Iterator[None]:
    """Record runyard's spans with ``tracer`` (None: none at all) within the block; for tests."""
    global _tracer
    saved, _tracer = _tracer, tracer
    try:
        yield
    finally:
        _tracer = saved
