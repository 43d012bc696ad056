"""One process of a deployment, for the multi-process specs:
``python -m tests.governance.worker SPEC_JSON``.

It opens a ``LimitRegistry`` on the spec's Redis URL (key prefix and all) with
the limit ``api`` as the spec declares it, prints ``{"ready": true}``, and at the
line ``go`` on its stdin does one of:

- ``calls``: ``calls`` calls at once, as owner ``owner``, each ``limit.call``
  POSTing to the fake API at ``url`` (``retries``, ``tokens``); after
  ``for_s`` seconds, calls still waiting are cancelled. Prints
  ``{"outcomes": {...}}``, a count per outcome (``ok``, an error's class name,
  ``cancelled``), and exits.
- ``hold``: takes ``calls`` permits, prints ``{"holding": n}`` and keeps them
  (renewing their leases) until it is killed.

With ``settings``, the limit is a served app's (``Runyard(Settings(**settings))``
on a memory store and the spec's Redis), as ``runyard serve`` would build it.
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys
from typing import Any, cast

import httpx

from runyard import Runyard, Settings
from runyard.context import RunContext
from runyard.governance import Breaker, LimitRegistry
from tests.governance.support import Caller


def say(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


async def main(spec: dict[str, Any]) -> None:
    declared = dict(spec["limit"])
    if "breaker" in declared:
        declared["breaker"] = Breaker(**declared["breaker"])
    if "settings" in spec:
        await as_served_app(spec, declared)
        return
    limits = LimitRegistry()
    limits.declare("api", **declared)
    await limits.open(spec["redis"], lease_s=spec.get("lease_s", 1.5))
    await play(spec, limits)


async def as_served_app(spec: dict[str, Any], declared: dict[str, Any]) -> None:
    """The limits of a served app (``Runyard(Settings(**spec["settings"]))``), which
    get their lease from the settings."""
    app = Runyard(Settings(store="memory://", broker=spec["redis"], **spec["settings"]))
    app.limit("api", **declared)
    async with app.running():
        await play(spec, app.limits)


async def play(spec: dict[str, Any], limits: LimitRegistry) -> None:
    limit = limits.get("api")
    ctx = cast(RunContext, Caller(spec.get("owner", "o")))
    say({"ready": True})
    await asyncio.to_thread(sys.stdin.readline)
    if spec.get("mode") == "hold":
        holding = [limit.acquire(ctx) for _ in range(spec["calls"])]
        for admission in holding:
            await admission.__aenter__()
        say({"holding": len(holding)})
        await asyncio.Event().wait()
    outcomes: collections.Counter[str] = collections.Counter()
    async with httpx.AsyncClient(timeout=10, headers={"x-owner": ctx.owner}) as http:

        async def post() -> Any:
            response = await http.post(spec["url"])
            response.raise_for_status()
            return response.json()

        async def one() -> None:
            try:
                await limit.call(ctx, post, (), {}, spec.get("retries", 0), spec.get("tokens", 0))
                outcomes["ok"] += 1
            except asyncio.CancelledError:
                outcomes["cancelled"] += 1
            except Exception as exc:
                outcomes[type(exc).__name__] += 1

        calls = [asyncio.create_task(one()) for _ in range(spec["calls"])]
        _, waiting = await asyncio.wait(calls, timeout=spec.get("for_s", 20))
        for call in waiting:
            call.cancel()
        await asyncio.gather(*calls)
    await limits.close()
    say({"outcomes": dict(outcomes)})


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
