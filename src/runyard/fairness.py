"""Fair turns between owners for a limit's waiters in this process (the run
queue's claim applies the same rule in each store's query, Redis's limits in
their script).

One owner's burst must not starve another owner's single request: the next
turn goes to the waiting owner that holds the fewest (runs executing, permits),
and among equals to the one served least recently. A newcomer therefore gets
the very next free slot, whoever queued before it.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class FairLines(Generic[T]):
    """Items waiting per owner, first in first out within an owner."""

    def __init__(self) -> None:
        self._lines: dict[str, deque[T]] = {}
        self._held: dict[str, int] = {}  # owner -> items taken and not yet done
        self._last_served: dict[str, int] = {}  # owner -> turn number; never served: absent
        self._turns = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def push(self, owner: str, item: T) -> None:
        self._lines.setdefault(owner, deque()).append(item)
        self._size += 1

    def pop(self) -> tuple[str, T] | None:
        """The next owner's oldest item; the owner then holds one more."""
        if not self._lines:
            return None
        held, last_served = self._held, self._last_served
        owner = min(self._lines, key=lambda o: (held.get(o, 0), last_served.get(o, -1)))
        line = self._lines[owner]
        item = line.popleft()
        if not line:
            del self._lines[owner]
        self._size -= 1
        self.take(owner)
        return owner, item

    def take(self, owner: str) -> None:
        """``owner`` holds one more without having waited (a free slot or permit)."""
        self._turns += 1
        self._last_served[owner] = self._turns
        self._held[owner] = self._held.get(owner, 0) + 1

    def done(self, owner: str) -> None:
        """``owner`` holds one fewer."""
        left = self._held.get(owner, 0) - 1
        if left > 0:
            self._held[owner] = left
            return
        self._held.pop(owner, None)
        if owner not in self._lines:
            self._last_served.pop(owner, None)  # forget owners with nothing left

    def remove(self, owner: str, item: T) -> bool:
        """Take a waiting item out of its line; False if it was not waiting."""
        line = self._lines.get(owner)
        if line is None or item not in line:
            return False
        line.remove(item)
        self._size -= 1
        if not line:
            del self._lines[owner]
        return True
