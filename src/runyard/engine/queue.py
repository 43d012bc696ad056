"""Which queued run executes next.

Two rules: a session's runs execute one at a time, in creation order (only the
head of a session's line is ever ready), and ready runs are served round-robin
across owners, so an owner with 100 queued runs delays another owner's single
run by at most one slot turnover.
"""

from __future__ import annotations

from collections import deque

from runyard.models import Run


class FairQueue:
    """Ready runs: FIFO within an owner, owners take turns."""

    def __init__(self) -> None:
        self._by_owner: dict[str, deque[Run]] = {}
        self._turns: deque[str] = deque()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def push(self, run: Run) -> None:
        queue = self._by_owner.get(run.owner)
        if queue is None:
            queue = self._by_owner[run.owner] = deque()
            self._turns.append(run.owner)
        queue.append(run)
        self._size += 1

    def pop(self) -> Run | None:
        if not self._turns:
            return None
        owner = self._turns.popleft()
        queue = self._by_owner[owner]
        run = queue.popleft()
        if queue:
            self._turns.append(owner)
        else:
            del self._by_owner[owner]
        self._size -= 1
        return run

    def remove(self, run_id: str) -> bool:
        for owner, queue in self._by_owner.items():
            for run in queue:
                if run.run_id == run_id:
                    queue.remove(run)
                    self._size -= 1
                    if not queue:
                        del self._by_owner[owner]
                        self._turns.remove(owner)
                    return True
        return False


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
