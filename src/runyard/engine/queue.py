"""Which queued run executes next.

Two rules: a session's runs execute one at a time, in creation order (only the
head of a session's line is ever ready: ``SessionLines``), and ready runs are
served fairly across owners (``runyard.fairness.FairLines``), so an owner with
100 queued runs delays another owner's single run by at most one slot turnover.
"""

from __future__ import annotations

from collections import deque

from runyard.models import Run


class SessionLines:
    """Each session's unfinished runs in creation order; the head may execute."""

    def __init__(self) -> None:
        self._lines: dict[str, deque[Run]] = {}

    def add(self, run: Run) -> bool:
        """Append ``run`` to its session's line; True if it is the head (ready)."""
        line = self._lines.setdefault(run.session_id, deque())
        line.append(run)
        return len(line) == 1

    def remove(self, run: Run) -> Run | None:
        """Take ``run`` out of its line; the new head if ``run`` was the head."""
        line = self._lines.get(run.session_id)
        if not line:
            return None
        was_head = line[0].run_id == run.run_id
        for queued in line:
            if queued.run_id == run.run_id:
                line.remove(queued)
                break
        if not line:
            del self._lines[run.session_id]
            return None
        return line[0] if was_head else None
