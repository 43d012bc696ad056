from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from runyard.observability import otel_setup, tracing
from tests.tracing.receiver import Receiver, receiving


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    with receiving() as found:
        yield found


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """runyard's spans, recorded in memory (as exported) within the test."""
    exporter = InMemorySpanExporter()
    provider = otel_setup.provider(SimpleSpanProcessor(exporter))
    with tracing.using(provider.get_tracer("runyard")):
        yield exporter
