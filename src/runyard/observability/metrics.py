"""The contract's Prometheus metrics, one registry per process.

Each process of a deployment exposes its own figures at ``/metrics``; scrape
every process and aggregate in Prometheus (``sum by (...)``).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from runyard.models import Event

REGISTRY = CollectorRegistry(auto_describe=True)

RUNS_TOTAL = Counter("runyard_runs_total", "Runs finished, by outcome", ["pipeline", "status"], registry=REGISTRY)
RUNS_ACTIVE = Gauge("runyard_runs_active", "Runs executing now", ["pipeline"], registry=REGISTRY)
RUN_DURATION = Histogram(
    "runyard_run_duration_seconds",
    "Run execution time",
    ["pipeline"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "runyard_queue_depth",
    "Runs queued for a worker, deployment-wide",
    registry=REGISTRY,
)
UNSERVED_RUNS = Gauge(
    "runyard_unserved_runs",
    "Runs queued for a pipeline that no live worker serves, deployment-wide",
    ["pipeline"],
    registry=REGISTRY,
)
CLAIMS_TOTAL = Counter(
    "runyard_claims_total", "Claims this worker made, by whether they took a run", ["result"], registry=REGISTRY
)
EVENTS_TOTAL = Counter("runyard_events_total", "Events persisted, by type", ["type"], registry=REGISTRY)
STREAM_SUBSCRIBERS = Gauge("runyard_stream_subscribers", "Open event streams", registry=REGISTRY)
REPLAY_SECONDS = Histogram(
    "runyard_replay_seconds", "Time to replay a stream's history from the store", registry=REGISTRY
)
STORE_WRITE_SECONDS = Histogram(
    "runyard_store_write_seconds",
    "Time to persist one batch of events",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
    registry=REGISTRY,
)
LIMIT_WAIT_SECONDS = Histogram("runyard_limit_wait_seconds", "Wait for a limit's permit", ["limit"], registry=REGISTRY)
LIMIT_IN_FLIGHT = Gauge("runyard_limit_in_flight", "Permits held", ["limit"], registry=REGISTRY)
BREAKER_OPEN = Gauge("runyard_breaker_open", "1 while a limit's breaker is open", ["limit"], registry=REGISTRY)
WEBHOOK_DELIVERIES_TOTAL = Counter(
    "runyard_webhook_deliveries_total",
    "Webhook delivery attempts, by result (delivered, failed, timeout, refused, gone, gave_up)",
    ["result"],
    registry=REGISTRY,
)
HTTP_REQUESTS_TOTAL = Counter(
    "runyard_http_requests_total", "HTTP requests answered", ["route", "status"], registry=REGISTRY
)


def count_events(events: Iterable[Event]) -> None:
    """Count a persisted batch by type with one increment per type (not per event)."""
    for type, n in Tally(event.type for event in events).items():
        EVENTS_TOTAL.labels(type).inc(n)
