"""The retention sweep runs in a task of its own: however long it takes (a large run
is deleted in many short writes), the worker goes on renewing its leases and
recovering other workers' runs."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from tests.support import make_app


async def test_a_sweep_that_takes_long_never_delays_renewals_or_recovery() -> None:
    async with make_app(store="memory://", sweep_interval_s=0.1, lease_s=1).running() as rt:
        store = rt.store
        sweeping, calls = asyncio.Event(), asyncio.Condition()
        counted: Counter[str] = Counter()

        async def endless_sweep(finished_before: float) -> int:
            sweeping.set()
            await asyncio.Event().wait()  # a sweep of a huge run, never done within this test
            return 0

        def counting(name: str) -> Any:
            method = getattr(store, name)

            async def call(*args: Any) -> Any:
                async with calls:
                    counted[name] += 1
                    calls.notify_all()
                return await method(*args)

            return call

        store.sweep_runs = endless_sweep  # type: ignore[method-assign]
        store.renew_leases = counting("renew_leases")  # type: ignore[method-assign]
        store.expired_leases = counting("expired_leases")  # type: ignore[method-assign]
        run = await rt.create_run("alice", "nap", {"seconds": 30})
        await asyncio.wait_for(sweeping.wait(), 5)
        seen = counted.copy()

        async with calls:
            await asyncio.wait_for(
                calls.wait_for(
                    lambda: all(counted[name] >= seen[name] + 3 for name in ("renew_leases", "expired_leases"))
                ),
                5,
            )

        await rt.cancel_run("alice", run.run_id)
