"""Wake-ups that wake two workers, not every one: a run queued in a fleet
costs two claims (the first takes it), whatever the number of workers.

Each pipeline has a list, ``{prefix}wake:{pipeline}``, of tokens that say only
"a run of this pipeline is ready"; one more, ``{prefix}wake``, is for any
worker (a run ended: its session's next run may be ready, of any pipeline). A
worker with a free slot waits on the lists of the pipelines it serves and on
that one (``BLPOP``): Redis gives each token to one waiter, the longest waiting
first. The worker claims until nothing more is ready or its slots are full;
full with runs still ready, it puts a token back for another worker
(``Engine._claim_ready``). With a ``wake`` signal on the control channel
instead, every worker claimed on every wake-up, and all but one usually found
nothing: a claim transaction per worker per creation.

A queued run gives ``CHOICES`` tokens, so two workers race for it and the one
whose loop is the least busy claims it first (the "power of two choices"). With
one token, the workers took the runs in turn whatever their load, and two
workers of CPU-bound runs did 5-7 % less work (``bench/README.md``, "A
twentieth round"). Redis hands a pushed token at once to a worker blocked on
its list; the tokens still there were pushed while no other worker waited, and
the worker that takes one next takes them all.

A process whose own worker is waiting for a queued run's pipeline is told at
once, as by a signal, and puts no token (``RedisBroker.queued``). Tokens are
lossy, as signals are: a worker that takes one and stops, or a token pushed
out of a full list, costs a worker's next poll of the store (``engine.POLL_S``);
so does a token for any worker taken by one that serves none of the ready runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from runyard.broker.folding import Folded

log = logging.getLogger("runyard.broker")

# A list keeps this many tokens: enough to wake as many workers for what was
# queued before any of them took one; more would only wake them again for runs
# already claimed.
TOKENS_KEPT = 8
# A list nobody takes from (a pipeline no worker serves now) is gone after this.
TOKENS_TTL_MS = 60_000
CHOICES = 2  # tokens a queued run gives: the workers that race to claim it
PUSH = """
for _, key in ipairs(KEYS) do
    for _ = 1, tonumber(ARGV[3]) do redis.call('LPUSH', key, 1) end
    redis.call('LTRIM', key, 0, tonumber(ARGV[1]) - 1)
    redis.call('PEXPIRE', key, ARGV[2])
end
"""


class RedisWakeQueue:
    """The broker's ``WakeQueue`` on Redis lists."""

    def __init__(self, client: Redis, prefix: str, timeout_s: float) -> None:
        self._client = client
        self._prefix = f"{prefix}wake:"  # + a pipeline
        self._any = f"{prefix}wake"  # for whichever worker takes it
        self._timeout_s = timeout_s  # a push, or a take's reply once its wait is over
        self._push = client.register_script(PUSH)
        self._asks: dict[str | None, Folded] = {}  # pipeline (None: any) -> its pushes, folded
        self._waiting: Counter[str] = Counter()  # pipeline -> this process's takes waiting for it
        self._closed = False

    def waiting_here(self, pipeline: str) -> bool:
        """Whether a worker of this process is waiting for ``pipeline``'s wake-ups."""
        return self._waiting[pipeline] > 0

    def ask(self, pipeline: str | None) -> None:
        if self._closed:
            return
        asks = self._asks.get(pipeline)
        if asks is None:
            # None: a run ended, and one worker looks for its session's next run
            pipelines, tokens = (None, 1) if pipeline is None else ([pipeline], CHOICES)
            asks = self._asks[pipeline] = Folded(
                lambda: self._give(pipelines, tokens), f"runyard-redis-wake-{pipeline}"
            )
        asks.ask()

    async def put(self, pipelines: Sequence[str] | None) -> None:
        await self._give(pipelines, 1)

    async def _give(self, pipelines: Sequence[str] | None, tokens: int) -> None:
        keys = [self._any] if pipelines is None else self._keys(pipelines)
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._push(keys=keys, args=[TOKENS_KEPT, TOKENS_TTL_MS, tokens])
        except (RedisError, OSError) as exc:  # TimeoutError is an OSError
            log.debug("wake-up for %s not sent (%s); workers find the runs in the store", pipelines, exc)

    async def take(self, pipelines: Sequence[str], timeout_s: float) -> bool:
        if not pipelines:
            await asyncio.sleep(timeout_s)
            return False
        self._waiting.update(pipelines)
        try:
            async with asyncio.timeout(timeout_s + self._timeout_s):
                reply = await self._client.blpop([*self._keys(pipelines), self._any], timeout=timeout_s)
                if reply is not None:
                    # Those left beside it found no other worker waiting when they were
                    # pushed: this worker's claim, which begins after, answers them too.
                    # Taken one by one, a lone worker claimed twice per queued run.
                    await self._client.delete(reply[0])
        except (RedisError, OSError) as exc:
            log.debug("waiting for wake-ups failed (%s); polling the store meanwhile", exc)
            await asyncio.sleep(timeout_s)
            return False
        finally:
            self._waiting.subtract(pipelines)
        return reply is not None

    async def close(self) -> None:
        self._closed = True
        for asks in self._asks.values():
            await asks.close()

    def _keys(self, pipelines: Sequence[str]) -> list[str]:
        return [self._prefix + pipeline for pipeline in pipelines]
