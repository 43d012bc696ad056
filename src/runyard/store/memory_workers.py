"""The memory store's registry of workers: who serves which pipelines, and the
queued runs no live worker serves (``/readyz``'s ``unserved``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection

from runyard.models import Run, RunStatus, now
from runyard.store.base import WORKER_FORGOTTEN_S, RunQueue


class MemoryWorkers(RunQueue):
    """The workers seen, over the memory store's runs."""

    _workers: dict[str, tuple[frozenset[str], float]]  # worker id -> pipelines served, last seen
    _unfinished: dict[str, None]
    _runs: dict[str, Run]

    async def worker_seen(self, worker_id: str, pipelines: Collection[str], at: float) -> None:
        self._workers[worker_id] = (frozenset(pipelines), at)
        for gone in [w for w, (_, seen) in self._workers.items() if seen < at - WORKER_FORGOTTEN_S]:
            del self._workers[gone]

    async def forget_worker(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)

    async def unserved_pipelines(self, seen_since: float) -> dict[str, int]:
        at = now()
        served = {name for pipelines, seen in self._workers.values() if seen >= seen_since for name in pipelines}
        waiting = Counter(
            run.pipeline
            for run_id in self._unfinished
            if (run := self._runs[run_id]).status is RunStatus.QUEUED and run.pipeline not in served and run.due(at)
        )
        return dict(waiting)
