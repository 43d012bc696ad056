"""Governance of external APIs: concurrency caps, request and token windows,
circuit breakers and retries, fair across owners; in this process, or shared
by a deployment through Redis."""

from runyard.governance.breaker import Breaker, BreakerOpen
from runyard.governance.limit import Limit, LimitRegistry
from runyard.governance.semaphore import PermitLost

__all__ = ["Breaker", "BreakerOpen", "Limit", "LimitRegistry", "PermitLost"]
