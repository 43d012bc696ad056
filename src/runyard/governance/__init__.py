"""Governance of external APIs: concurrency caps, request and token windows,
circuit breakers and retries, fair across owners."""

from runyard.governance.breaker import Breaker, BreakerOpen
from runyard.governance.limit import Limit, LimitRegistry

__all__ = ["Breaker", "BreakerOpen", "Limit", "LimitRegistry"]
