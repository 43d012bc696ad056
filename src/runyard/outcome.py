"""How a run ends: the events and the row update of each terminal status.

Plain data beside ``models``: the engine ends the runs it executes with it, and
the store the runs it ends itself (a cancel in a session's deletion, an
interrupt, a question that timed out), so every end is written the same way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runyard.models import RunError, RunStatus, RunUpdate, now

MAX_ERROR_MESSAGE = 500


@dataclass(frozen=True, slots=True)
class Outcome:
    status: RunStatus
    output: Any = None
    error: RunError | None = None

    @classmethod
    def succeeded(cls, output: Any) -> Outcome:
        return cls(RunStatus.SUCCEEDED, output=output)

    @classmethod
    def failed(cls, code: str, message: str) -> Outcome:
        return cls(RunStatus.FAILED, error=RunError(code, message[:MAX_ERROR_MESSAGE]))

    @classmethod
    def cancelled(cls) -> Outcome:
        return cls(RunStatus.CANCELLED, error=RunError("cancelled", "the run was cancelled"))

    @classmethod
    def timed_out(cls, timeout_s: float) -> Outcome:
        return cls(RunStatus.TIMED_OUT, error=RunError("timed_out", f"the run exceeded its {timeout_s:g} s timeout"))

    @classmethod
    def unanswered(cls, ask_id: str) -> Outcome:
        """A question (``ctx.ask``) that was not answered within its ``timeout_s``."""
        return cls(RunStatus.TIMED_OUT, error=RunError("timed_out", f"no answer to {ask_id} within its timeout"))

    def events(self) -> list[tuple[str, Any]]:
        """``error`` (for failures and timeouts), ``status``, then the one ``end``."""
        items: list[tuple[str, Any]] = []
        if self.error is not None and self.status in (RunStatus.FAILED, RunStatus.TIMED_OUT):
            items.append(("error", self.error.to_dict()))
        items.append(("status", {"status": self.status.value}))
        if self.status is RunStatus.SUCCEEDED:
            items.append(("end", {"status": self.status.value, "output": self.output}))
        else:
            assert self.error is not None
            items.append(("end", {"status": self.status.value, "error": self.error.to_dict()}))
        return items

    def update(self, expect: frozenset[RunStatus], at: float | None = None) -> RunUpdate:
        """The row change: this status, finished at ``at`` (now), no lease, no wait."""
        return RunUpdate(
            status=self.status,
            expect=expect,
            output=self.output,
            set_output=self.status is RunStatus.SUCCEEDED,
            error=self.error,
            finished_at=now() if at is None else at,
            clear_lease=True,
            clear_waiting=True,
        )
