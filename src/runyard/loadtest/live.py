"""``runyard loadtest`` on a terminal: what the test is doing while it runs.

One rich progress line: a bar of the time (``--duration``) or of the first runs
(without), the runs started and finished, the events per second of the last
moments, and the violations so far, red from the first one. Nothing of this is
printed when the output is not a terminal: a pipe gets the report alone.
"""

from __future__ import annotations

from collections import deque
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from runyard.loadtest.checks import Tally
from runyard.loadtest.config import Config

RATE_WINDOW_S = 2.0  # events/s over the last two seconds: steady to read, quick to show a stall


class LiveProgress:
    """``watch`` for ``loadtest.run``, drawing on ``console``; a context manager."""

    def __init__(self, console: Console, config: Config) -> None:
        self._duration = config.duration_s
        self._runs = config.sessions  # without a duration, each session makes one run
        # a short bar, so the figures fit on an 80-column terminal
        columns = (BarColumn(bar_width=14), TimeElapsedColumn(), TextColumn("{task.fields[figures]}"))
        self._progress = Progress(*columns, console=console)
        total = self._duration if self._duration else self._runs
        self._task = self._progress.add_task("", total=total, figures="")
        self._seen: deque[tuple[float, int]] = deque()
        self._started = False

    def __enter__(self) -> LiveProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._started:
            self._progress.stop()

    def __call__(self, tally: Tally, elapsed_s: float) -> None:
        if not self._started:  # drawn from the first runs on: a server that is not there gets no empty bar
            self._progress.start()
            self._started = True
        completed = min(elapsed_s, self._duration) if self._duration else tally.finished
        self._progress.update(self._task, completed=completed, figures=self.figures(tally, elapsed_s))

    def figures(self, tally: Tally, elapsed_s: float) -> str:
        """``runs 12 started, 10 done · 480 events/s · 0 violations``."""
        violations = sum(tally.by_kind.values())
        style, rate = ("red" if violations else "green"), self._rate(tally.events, elapsed_s)
        return (
            f"runs {tally.runs} started, {tally.finished} done · {rate:,.0f} events/s"
            f" · [{style}]{violations} violation{'' if violations == 1 else 's'}[/{style}]"
        )

    def _rate(self, events: int, now: float) -> float:
        self._seen.append((now, events))
        while len(self._seen) > 2 and now - self._seen[1][0] >= RATE_WINDOW_S:
            self._seen.popleft()
        then, before = self._seen[0]
        return (events - before) / (now - then) if now > then else 0.0
