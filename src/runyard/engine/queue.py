"""Which queued run executes next.

Two rules: a session's runs execute one at a time, in creation order (only the
head of a session's line is ever ready), and the next free slot goes to the
owner with the fewest runs executing (least recently served among equals), so
an owner with 100 queued runs delays another owner's single run by at most one
slot turnover.
"""

from __future__ import annotations

from collections import deque

from runyard.models import Run


class FairQueue:
    """Ready runs, FIFO within an owner. The next run goes to the owner with the
    fewest runs executing, and among equals to the one served least recently:
    a newcomer is served at the very next free slot, whoever queued before."""

    def __init__(self) -> None:
        self._by_owner: dict[str, deque[Run]] = {}
        self._waiting: list[str] = []  # owners with ready runs
        self._executing: dict[str, int] = {}
        self._last_served: dict[str, int] = {}  # owner -> pop number; never served: absent
        self._pops = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def push(self, run: Run) -> None:
        queue = self._by_owner.get(run.owner)
        if queue is None:
            queue = self._by_owner[run.owner] = deque()
            self._waiting.append(run.owner)
        queue.append(run)
        self._size += 1

    def pop(self) -> Run | None:
        """The next run to execute; its owner counts one more run executing."""
        if not self._waiting:
            return None
        executing, last_served = self._executing, self._last_served
        owner = min(self._waiting, key=lambda o: (executing.get(o, 0), last_served.get(o, -1)))
        queue = self._by_owner[owner]
        run = queue.popleft()
        if not queue:
            del self._by_owner[owner]
            self._waiting.remove(owner)
        self._size -= 1
        self._pops += 1
        last_served[owner] = self._pops
        executing[owner] = executing.get(owner, 0) + 1
        return run

    def done(self, owner: str) -> None:
        """A run popped for ``owner`` stopped executing."""
        left = self._executing.get(owner, 0) - 1
        if left > 0:
            self._executing[owner] = left
        else:
            self._executing.pop(owner, None)
            if owner not in self._by_owner:
                self._last_served.pop(owner, None)  # forget owners with nothing left

    def remove(self, run_id: str) -> bool:
        for owner, queue in self._by_owner.items():
            for run in queue:
                if run.run_id == run_id:
                    queue.remove(run)
                    self._size -= 1
                    if not queue:
                        del self._by_owner[owner]
                        self._waiting.remove(owner)
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
