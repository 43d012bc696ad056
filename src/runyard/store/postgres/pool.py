"""How the PostgreSQL store's pool is made: its bounds (from the URL), the
settings of its sessions, what a new connection learns and what a released one
is reset with."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from runyard.errors import ConfigurationError

POOL_MIN = 1
POOL_MAX = 10


def pool_options(url: str) -> tuple[str, int, int]:
    """The DSN for asyncpg (runyard's own ``pool_min``/``pool_max`` taken out) and the pool bounds."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {key: value for key, value in query if key in ("pool_min", "pool_max")}
    if not own:
        return url, POOL_MIN, POOL_MAX
    try:
        low, high = int(own.get("pool_min", POOL_MIN)), int(own.get("pool_max", POOL_MAX))
    except ValueError as exc:
        raise ConfigurationError(f"bad PostgreSQL URL: pool_min and pool_max are integers ({exc})") from exc
    if not 0 <= low <= high or high < 1:
        raise ConfigurationError(
            f"bad PostgreSQL URL: need 0 <= pool_min <= pool_max and pool_max >= 1, not {low}, {high}"
        )
    rest = urlencode([(key, value) for key, value in query if key not in own])
    return urlunsplit(parts._replace(query=rest)), low, high


def server_settings(dsn: str, lease_s: float | None) -> dict[str, str]:
    """The settings of each of the pool's sessions; the URL's own (``?name=value``) win.

    ``application_name`` shows in pg_stat_activity. With the runs' ``lease_s``,
    PostgreSQL ends a session whose transaction stays idle (between two of its
    statements) for a whole lease: its process stalled (paused, swapped out, its
    event loop blocked), so its runs' leases ran out too, and the row locks it
    holds would otherwise stop their recovery for as long as it stays stalled.
    Its transaction rolls back; the process, if it wakes, finds its connection
    closed and its runs recovered elsewhere.

    Every statement is planned for the tables as they are when it runs
    (``plan_cache_mode``), never with a generic plan its connection settled on
    earlier: asyncpg prepares each statement once per connection, and a generic
    plan made while ``runs`` held a few hundred rows (a new deployment, the
    first minute of a burst) stays until the next ANALYZE. The batch's row lock
    (``LOCK_RUNS``) kept a sequential scan that compared every row with every
    id of the batch: 85 ms a batch at 16,000 runs instead of 1.3, and a worker
    that fell 4 s behind its queue (``bench/README.md``, "A twenty-first
    round"). Planning each statement cost no measurable throughput there.

    A page read at random is priced nearly as one read in order
    (``random_page_cost`` 1.1; PostgreSQL's 4 is a spinning disk's ratio).
    runyard's tables live in the server's cache, and its statements join arrays
    of a batch's keys to them: priced for a disk, a lookup per key lost to a
    scan of the whole table, so a batch that ended 240 runs hashed all 12,000
    rows of ``runs`` (12.5 ms) where 240 lookups took 3.8 (``bench/README.md``,
    "A twenty-second round").
    """
    own = {key for key, _ in parse_qsl(urlsplit(dsn).query)}
    settings = {"application_name": "runyard", "plan_cache_mode": "force_custom_plan", "random_page_cost": "1.1"}
    if lease_s is not None:
        settings["idle_in_transaction_session_timeout"] = str(math.ceil(lease_s * 1000))  # ms
    return {key: value for key, value in settings.items() if key not in own}


# The array types the store's statements take or give (``$1::int4[]``). asyncpg
# asks the server about any type it has no built-in codec for (every array but
# text[]) once per connection, one round trip each time a statement brings a new
# one: on a fresh connection, the first append made three, each a query on the
# catalog of a few ms, inside the write's transaction and its statement timeout.
# A new connection asks for all of them at once instead.
ARRAY_TYPES = ("int4[]", "int8[]", "float8[]", "bool[]", "bytea[]", "json[]")
_LEARN_ARRAY_TYPES = "SELECT " + ", ".join(f"NULL::{name}" for name in ARRAY_TYPES)


async def learn_array_types(conn: Any) -> None:
    """Run on each new connection of the pool (asyncpg's ``init``)."""
    await conn.prepare(_LEARN_ARRAY_TYPES)


async def keep_session(conn: Any) -> None:
    """What a connection released to the pool is reset with: nothing more than what
    asyncpg always does (roll back a transaction left open). Its default reset
    (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``) is one more
    round trip and statement per use of the pool, for session state runyard never
    leaves: no ``SET``, ``LISTEN``, cursor or session-level lock (the migration's
    lock is its transaction's)."""
