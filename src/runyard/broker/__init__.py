"""Brokers by URL scheme, loaded lazily."""

from __future__ import annotations

from runyard._backends import BackendTable, load_backend
from runyard.broker.base import Broker

SUPPORTED_BROKERS: BackendTable = {
    "local": ("runyard.broker.local", "LocalBroker", None),
    "redis": ("runyard.broker.redis", "RedisBroker", "redis"),
}


def broker_from_url(url: str) -> Broker:
    """The broker named by ``url``, not yet opened."""
    broker: Broker = load_backend("broker", url, SUPPORTED_BROKERS)
    return broker


__all__ = ["SUPPORTED_BROKERS", "Broker", "broker_from_url"]
