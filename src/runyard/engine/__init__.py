"""The run's life: queue and fairness, execution, timeouts, cancellation, recovery."""

from runyard.engine.engine import Engine

__all__ = ["Engine"]
