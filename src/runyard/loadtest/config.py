"""The flags of ``runyard loadtest``, checked."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from runyard.demo.ticker import MAX_COUNT, MAX_INTERVAL_MS

PIPELINE = "ticker"


@dataclass(frozen=True, slots=True)
class Config:
    """What to run: the flags of ``runyard loadtest``, checked."""

    url: str
    sessions: int = 50
    events: int = 100
    interval_ms: int = 50
    duration_s: float | None = None
    timeout_s: float | None = None
    client_id: str | None = None
    token: str | None = None
    # New for every test, so owners, markers and idempotency keys never meet an earlier test's.
    prefix: str = field(default_factory=lambda: f"lt-{secrets.token_hex(4)}")

    def __post_init__(self) -> None:
        rules = [
            (self.sessions >= 1, "--sessions must be at least 1"),
            (0 <= self.events <= MAX_COUNT, f"--events must be between 0 and {MAX_COUNT}"),
            (0 <= self.interval_ms <= MAX_INTERVAL_MS, f"--interval-ms must be between 0 and {MAX_INTERVAL_MS}"),
            (self.duration_s is None or self.duration_s > 0, "--duration must be positive"),
            (self.timeout_s is None or self.timeout_s > 0, "--timeout must be positive"),
        ]
        for ok, message in rules:
            if not ok:
                raise ValueError(message)

    @property
    def shared_owner(self) -> bool:
        return bool(self.client_id or self.token)

    def owner(self, session: int) -> str | None:
        """The ``X-Client-Id`` of a session: its own, unless one was given (or a token says who)."""
        return self.client_id if self.shared_owner else f"{self.prefix}-{session}"

    @property
    def deadline_s(self) -> float:
        """``--timeout``, else the duration plus one run's length plus a minute of slack."""
        if self.timeout_s is not None:
            return self.timeout_s
        return (self.duration_s or 0.0) + self.events * self.interval_ms / 1000 + 60.0
