"""The SQLite store's schema: its migrations (append-only: the position is the
version) and its SQL; rows and models convert through ``store._rows``."""

from __future__ import annotations

import functools
import sqlite3
import time

from runyard.errors import StoreError
from runyard.models import UNFINISHED
from runyard.store._numbering import EVENT_OVERHEAD
from runyard.store._rows import RUN_FIELDS, SESSION_COLUMNS, STEP_COLUMNS

# The one statement of which statuses are unfinished (``models.UNFINISHED``): a
# waiting run holds its session as a queued or running one does.
_UNFINISHED_VALUES = ", ".join(f"'{status.value}'" for status in sorted(UNFINISHED))
UNFINISHED_SQL = f"status IN ({_UNFINISHED_VALUES})"
FINISHED = f"status NOT IN ({_UNFINISHED_VALUES})"

# Append-only: the position is the version. Never edit an entry; add one.
MIGRATIONS: list[str] = [
    """CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        created_at REAL NOT NULL,
        last_activity REAL NOT NULL,
        metadata TEXT NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID""",
    "CREATE INDEX sessions_last_activity ON sessions (last_activity)",
    """CREATE TABLE messages (
        message_id INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL,
        role TEXT NOT NULL,
        content TEXT,
        ts REAL NOT NULL,
        extra TEXT NOT NULL
    )""",
    "CREATE INDEX messages_session ON messages (session_id, message_id)",
    # created_seq is the rowid: creation order, which listing follows even when created_at ties
    """CREATE TABLE runs (
        created_seq INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL UNIQUE,
        session_id TEXT NOT NULL,
        owner TEXT NOT NULL,
        pipeline TEXT NOT NULL,
        status TEXT NOT NULL,
        input TEXT,
        output TEXT,
        error TEXT,
        metadata TEXT NOT NULL,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        attempt INTEGER NOT NULL,
        timeout_s REAL,
        max_attempts INTEGER NOT NULL,
        worker_id TEXT,
        lease_expires_at REAL
    )""",
    "CREATE INDEX runs_owner ON runs (owner, created_seq)",
    "CREATE INDEX runs_session ON runs (session_id, created_seq)",
    "CREATE INDEX runs_status ON runs (status, created_seq)",
    "CREATE INDEX runs_finished_at ON runs (finished_at) WHERE finished_at IS NOT NULL",
    # Events in arrival order (rowid), found by (run key, seq): a batch holding one
    # event of each of 1,000 runs then touches a few pages, not one per run
    # (measured: 3.8 ms a batch instead of 18 ms; replay 1.3 M events/s).
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        run_pk INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        type TEXT NOT NULL,
        data BLOB NOT NULL,
        ts REAL NOT NULL
    )""",
    "CREATE UNIQUE INDEX events_run_seq ON events (run_pk, seq)",
    "ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0",
    # when each owner was last served, for the claim's tie-break: one index seek per owner
    "CREATE INDEX runs_owner_started ON runs (owner, started_at)",
    # RUNYARD_QUOTA_RUNS: runs each owner created while a quota was set (runs may be swept; this stays)
    "CREATE TABLE owner_quota (owner TEXT PRIMARY KEY, runs_created INTEGER NOT NULL) WITHOUT ROWID",
    """CREATE TABLE idempotency_keys (
        owner TEXT NOT NULL,
        key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        run_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (owner, key)
    ) WITHOUT ROWID""",
    "CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at)",
    # the workers that claim runs, and the pipelines each serves (a JSON list): what
    # says which queued runs no live worker will ever claim
    "CREATE TABLE workers (worker_id TEXT PRIMARY KEY, pipelines TEXT NOT NULL, last_seen REAL NOT NULL) WITHOUT ROWID",
    # durable work (issue 12): what a waiting run waits for (a Wait as JSON), and
    # when that wait is due (its ``until``, kept apart so that it is indexed)
    "ALTER TABLE runs ADD COLUMN waiting TEXT",
    "ALTER TABLE runs ADD COLUMN wake_at REAL",
    "ALTER TABLE runs ADD COLUMN executed_s REAL NOT NULL DEFAULT 0",
    "CREATE INDEX runs_wake_at ON runs (wake_at) WHERE status = 'waiting'",
    # an event's replay position (``EventDraft.pos``); NULL for the runtime's events
    "ALTER TABLE events ADD COLUMN pos INTEGER",
    # recorded steps by (run key, name, n): the first record of a step wins
    """CREATE TABLE steps (
        run_pk INTEGER NOT NULL,
        name TEXT NOT NULL,
        n INTEGER NOT NULL,
        result TEXT NOT NULL,
        pos INTEGER NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (run_pk, name, n)
    ) WITHOUT ROWID""",
    # issue 13: store
    # the long-term store: an owner's items by namespace (parts joined by ".") and key
    """CREATE TABLE items (
        owner TEXT NOT NULL,
        namespace TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        expires_at REAL,
        embedding BLOB,
        PRIMARY KEY (owner, namespace, key)
    ) WITHOUT ROWID""",
    "CREATE INDEX items_expires_at ON items (expires_at) WHERE expires_at IS NOT NULL",
    # issue 13: crons
    # after_s: no worker claims the run before this time (NULL: at once)
    "ALTER TABLE runs ADD COLUMN scheduled_for REAL",
    """CREATE TABLE crons (
        cron_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        pipeline TEXT NOT NULL,
        input TEXT,
        schedule TEXT NOT NULL,
        timezone TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        next_run_at REAL,
        enabled INTEGER NOT NULL,
        session_id TEXT,
        metadata TEXT NOT NULL,
        webhook TEXT,
        last_run_id TEXT,
        last_run_at REAL
    ) WITHOUT ROWID""",
    "CREATE INDEX crons_owner ON crons (owner, created_at)",
    "CREATE INDEX crons_due ON crons (next_run_at) WHERE enabled = 1",
    # issue 13: session ids
    # an owner's sessions by activity: GET /v1/sessions pages through them newest first
    "CREATE INDEX sessions_owner_activity ON sessions (owner, last_activity, session_id)",
    # issue 13: webhooks
    # a run's webhook URL, and the deliveries owed (one per finished run with a
    # webhook, inserted by the append that finished it); due_at is when it may be
    # claimed: a claim moves it to its lease's end, a failure to the next try
    "ALTER TABLE runs ADD COLUMN webhook TEXT",
    """CREATE TABLE webhook_outbox (
        run_id TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        queued_at REAL NOT NULL,
        due_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID""",
    "CREATE INDEX webhook_outbox_due ON webhook_outbox (due_at)",
    # issue 18: traces
    # a run's W3C trace context (traceparent, then a newline and tracestate if
    # any): every execution of the run, on any worker, continues that trace
    "ALTER TABLE runs ADD COLUMN trace TEXT",
    # issue 15: a claim that reads the queue, not every unfinished run (CLAIMABLE):
    # the queued runs by owner; a run's unfinished elders in its session, and an
    # owner's running runs, each one index seek, however long the history
    "CREATE INDEX runs_queued ON runs (owner, created_seq) WHERE status = 'queued'",
    f"CREATE INDEX runs_session_unfinished ON runs (session_id, created_seq) WHERE {UNFINISHED_SQL}",
    "CREATE INDEX runs_running ON runs (owner) WHERE status = 'running'",
    # issue 15: events found by (seq bucket, run key, seq) instead of (run key, seq)
    # (``bucket_of``): with each run's entries together, once a run had filled a page
    # every event dirtied its run's own page, which the commit wrote to the WAL (an append
    # 4 -> 10 us of CPU and 1.8 -> 6.6 KiB written as the table grew to 1 M events,
    # ``bench/sqlite_layouts.py``). A run's last bucket is kept in its row (one seek
    # then finds its last seq); written when it changes, once every 16 events.
    "ALTER TABLE runs ADD COLUMN last_bucket INTEGER",
    "UPDATE runs SET last_bucket = (SELECT max(seq) FROM events WHERE events.run_pk = runs.created_seq) >> 4",
    "CREATE UNIQUE INDEX events_bucket_run_seq ON events ((seq >> 4), run_pk, seq)",
    "DROP INDEX events_run_seq",
]

# An event's bucket: its seq's 16s. The index over (bucket, run key, seq) keeps the
# newest entries of the runs being written near each other, whatever their history
# (runs that started together are in the same buckets, next to each other), so a
# batch dirties a few index pages, not one per run. A query names a run's events by
# its buckets (``run_buckets``): one index seek each. The migrations above spell
# out the shift: changing it takes a migration that rebuilds the index.
BUCKET_BITS = 4


def bucket_of(seq: str) -> str:
    """The bucket of the SQL expression ``seq`` (the index's expression, for a seq column).

    The index's expression has no affinity, and SQLite seeks it only with values
    that have none either: a column compared with it must be written ``+column``
    (``+runs.last_bucket``), or the planner reads every bucket (a skip-scan) or
    every event."""
    return f"({seq} >> {BUCKET_BITS})"


def run_buckets(first: str, last: str) -> str:
    """The buckets ``first`` to ``last`` (SQL expressions) as a list for ``IN``: a run's
    events are ``bucket_of(seq) IN run_buckets(...) AND run_pk = ?``, an index seek per
    bucket (a range of buckets would read every run's entries in it). ``last`` NULL
    (a run without events): ``first`` alone."""
    return (
        f"(WITH RECURSIVE b(n) AS (SELECT +({first}) UNION ALL SELECT n + 1 FROM b WHERE n < {last}) SELECT n FROM b)"
    )


def newest_buckets(run_pk: str, last: str, going_on: str) -> str:
    """A run's buckets from its last (``last``) down, while ``going_on`` (an SQL
    condition on the bucket ``b.n`` and the run's key ``run_pk``) holds for the
    bucket just listed: the walk back from a run's end, for ``IN``."""
    # +b.n: plain, SQLite's planner read every event for each step (28 ms for 200,000)
    more = going_on.format(n="+b.n", run_pk=run_pk)
    walk = f"SELECT +{last} UNION ALL SELECT n - 1 FROM b WHERE n > 0 AND {more}"
    return f"(WITH RECURSIVE b(n) AS ({walk}) SELECT n FROM b)"


# Every run field but last_seq is stored in the row (``STORED_RUN_FIELDS``).
STORED_RUN_FIELDS = tuple(name for name in RUN_FIELDS if name != "last_seq")
_STORED_RUN_COLUMNS = ", ".join(STORED_RUN_FIELDS)
# A run's last seq is read from its events (one index seek, in its last bucket), never
# stored in the runs row: bumping it there cost a random row rewrite per run per batch.
LAST_SEQ = (
    f"(SELECT coalesce(max(seq), 0) FROM events WHERE {bucket_of('seq')} = +runs.last_bucket"
    " AND events.run_pk = runs.created_seq)"
)


def events_of(runs: str = "runs", events: str = "events") -> str:
    """The condition that an event (``events``, a table or its alias) is one of a run's
    (``runs``), in a statement on runs: a seek per bucket of the run's."""
    return (
        f"{bucket_of(events + '.seq')} IN {run_buckets('0', runs + '.last_bucket')}"
        f" AND {events}.run_pk = {runs}.created_seq"
    )


RUN_EVENTS = events_of()
# Likewise a run's stored bytes (``event_size`` summed), read only when a run is not
# in the writer's cache (its claim, or after a restart): length() of a BLOB reads
# the row's header, never its overflow pages, so this costs one row per event.
# A step's result counts too (``_numbering.number``): its bytes, not its characters.
STEP_BYTES = "length(CAST(result AS BLOB))"
STORED_BYTES = (
    f"(SELECT coalesce(sum(length(data) + length(type)), 0) + count(*) * {EVENT_OVERHEAD}"
    f" FROM events WHERE {RUN_EVENTS})"
    f" + (SELECT coalesce(sum({STEP_BYTES}), 0) FROM steps WHERE steps.run_pk = runs.created_seq)"
)
RUN_COLUMNS = ", ".join(LAST_SEQ if name == "last_seq" else name for name in RUN_FIELDS)  # ``RUN_FIELDS``, read
# wake_at is the waiting column's ``until``, from the same parameter (numbered: ?N)
_WAITING = STORED_RUN_FIELDS.index("waiting") + 1
INSERT_RUN = (
    f"INSERT INTO runs ({_STORED_RUN_COLUMNS}, wake_at)"
    f" VALUES ({', '.join('?' * len(STORED_RUN_FIELDS))}, json_extract(?{_WAITING}, '$.until'))"
)
INSERT_SESSION = f"INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
EVENT_CHUNK = 256  # rows per multi-row INSERT
EVENT_ROW = ("run_pk", "seq", "type", "data", "ts", "pos")  # an event's values, as ``insert_events`` binds them


# The ready runs (each the oldest unfinished run of its session, of a pipeline the
# claiming worker serves: ?1, a JSON list; due by ?2), fairest first, ?3 at most:
# an owner's n-th ready run takes turn (its running runs + n); ties go to the
# owner served least recently, then to the oldest run.
# Its cost follows the owners with queued runs and what is claimed, not the
# queue's length nor every unfinished run. The owners are found by skipping
# through ``runs_queued`` (one seek each), with their running runs (counted in
# ``runs_running``), their last start (one seek of ``runs_owner_started``) and
# their first ready run. Then a merge: ``walk`` is a recursive CTE whose ORDER BY
# makes its queue a priority queue, so it takes the fairest run of all, puts that
# owner's next ready run (turn + 1) in the queue, and stops after ?3 runs. A run
# behind an unfinished one of its session (one probe of ``runs_session_unfinished``),
# of another pipeline or not yet due is passed over. One statement, not a loop in
# Python: the writer thread waits once for the GIL, not once a query.
# (Before, the claim grouped every unfinished run by session and every running run
# by owner: 2 ms with 1,000 runs running, 30-40 ms with 10,000 queued, and 7-8 ms
# a claim of ~32 runs while runs were created as fast as a process takes them.)
def _next_ready(owner: str, after: str) -> str:
    return f"""SELECT q.created_seq FROM runs q INDEXED BY runs_queued
        WHERE q.status = 'queued' AND q.owner = {owner} AND q.created_seq > {after}
            AND q.pipeline IN (SELECT value FROM json_each(?1)) AND (q.scheduled_for IS NULL OR q.scheduled_for <= ?2)
            AND NOT EXISTS (SELECT 1 FROM runs p INDEXED BY runs_session_unfinished
                WHERE p.session_id = q.session_id AND p.created_seq < q.created_seq AND p.{UNFINISHED_SQL})
        ORDER BY q.created_seq LIMIT 1"""


CLAIMABLE = f"""WITH RECURSIVE owners(owner) AS (
    SELECT (SELECT min(owner) FROM runs INDEXED BY runs_queued WHERE status = 'queued')
    UNION ALL
    SELECT (SELECT min(q.owner) FROM runs q INDEXED BY runs_queued WHERE q.status = 'queued' AND q.owner > o.owner)
    FROM owners o WHERE o.owner IS NOT NULL
), firsts AS (
    SELECT o.owner,
        (SELECT count(*) FROM runs b INDEXED BY runs_running WHERE b.owner = o.owner AND b.status = 'running')
            AS running,
        (SELECT max(started_at) FROM runs s WHERE s.owner = o.owner) AS last,
        ({_next_ready("o.owner", "0")}) AS created_seq
    FROM owners o WHERE o.owner IS NOT NULL
), walk(of_owner, last, created_seq, turn) AS (
    SELECT owner, last, created_seq, running + 1 FROM firsts WHERE created_seq IS NOT NULL
    UNION ALL
    SELECT w.of_owner, w.last, n.created_seq, w.turn + 1
    FROM walk w JOIN runs n ON n.created_seq = ({_next_ready("w.of_owner", "w.created_seq")})
    ORDER BY 4, 2 NULLS FIRST, 3 LIMIT ?3
)
SELECT {RUN_COLUMNS}, cancel_requested FROM walk JOIN runs USING (created_seq)
ORDER BY turn, last NULLS FIRST, created_seq"""
# The same claim, when the oldest queued runs hold ?3 runs of owners never served.
# Such an owner (no run of theirs ever started, so none running: a claim, the only
# way into ``running``, sets ``started_at``) has its first ready run at turn 1 and
# first among the ties (its ``last`` is NULL), so ?3 of those runs, the oldest
# first, are exactly what ``CLAIMABLE`` would take: found among the ?4 oldest
# queued runs, without walking every owner with queued runs. That walk is what a
# claim cost while many new owners' runs waited, as in a ramp of new users: a
# claim of 32 with 1,000 owners queued took 3.3 ms at 1,000 queued runs and 7.2 at
# 10,000, against 1.7 at 100; 1.8 ms at each depth with this
# (``bench/claims.py --store sqlite --owners 1000``). With fewer than ?3 rows the
# claim is not settled here: ``CLAIMABLE`` decides (a claim of owners all served
# before pays both, 1-5 % more, ``--owners 20``).
FRESH_CLAIMABLE = f"""WITH ready AS (
    SELECT q.created_seq, q.owner
    FROM (SELECT created_seq FROM runs INDEXED BY runs_status WHERE status = 'queued' ORDER BY created_seq LIMIT ?4) o
    JOIN runs q ON q.created_seq = o.created_seq
    WHERE (SELECT max(started_at) FROM runs s WHERE s.owner = q.owner) IS NULL
        AND q.pipeline IN (SELECT value FROM json_each(?1)) AND (q.scheduled_for IS NULL OR q.scheduled_for <= ?2)
        AND NOT EXISTS (SELECT 1 FROM runs p INDEXED BY runs_session_unfinished
            WHERE p.session_id = q.session_id AND p.created_seq < q.created_seq AND p.{UNFINISHED_SQL})
), firsts AS (
    SELECT min(created_seq) AS created_seq FROM ready GROUP BY owner ORDER BY 1 LIMIT ?3
)
SELECT {RUN_COLUMNS}, cancel_requested FROM firsts JOIN runs USING (created_seq) ORDER BY created_seq"""
FRESH_SCAN = 2  # the oldest queued runs FRESH_CLAIMABLE looks at, per run claimed
# a queued run scheduled for after the parameter (``after_s``) waits for no worker yet
DUE = "(scheduled_for IS NULL OR scheduled_for <= ?)"
# queued runs per pipeline that no worker seen since the parameter serves (and due by the second)
UNSERVED = f"""SELECT pipeline, count(*) FROM runs WHERE status = 'queued' AND {DUE} AND pipeline NOT IN
    (SELECT p.value FROM workers w, json_each(w.pipelines) p WHERE w.last_seen >= ?) GROUP BY pipeline"""
# a list travels as one JSON parameter: one cached statement whatever its length, no variable limit
IN_JSON = "IN (SELECT value FROM json_each(?))"
# each expired run's events: how many, and their bytes (length() of a BLOB reads no overflow page)
# the events of the runs whose keys the JSON list parameter holds, each beside its run
LISTED_RUNS_EVENTS = f"runs CROSS JOIN events ON {RUN_EVENTS} WHERE created_seq {IN_JSON}"
EVENT_WEIGHTS = f"SELECT created_seq, count(*), sum(length(data)) FROM {LISTED_RUNS_EVENTS} GROUP BY created_seq"
# likewise their recorded steps (a step's result counts toward its run's bytes)
STEP_WEIGHTS = f"SELECT run_pk, count(*), sum({STEP_BYTES}) FROM steps WHERE run_pk {IN_JSON} GROUP BY run_pk"
INSERT_STEP = "INSERT OR IGNORE INTO steps (run_pk, name, n, result, pos, at) VALUES (?, ?, ?, ?, ?, ?)"
# the walk back through a run's buckets goes on past a bucket without a replay mark
_NO_MARK = (
    "NOT EXISTS (SELECT 1 FROM events x WHERE " + bucket_of("x.seq") + " = {n} AND x.run_pk = {run_pk}"
    " AND x.pos IS NOT NULL)"
)
# A run's recorded steps and its replay mark (the pos of its last event that has
# one: the run's buckets from the newest back, by index), in one statement: one
# snapshot, so the two agree. MATERIALIZED: the mark is found once, not once per
# step. No row: no such run; one row of NULL step columns: a run without steps.
REPLAY = f"""WITH m AS MATERIALIZED (
    SELECT created_seq AS pk, coalesce((SELECT pos FROM events e WHERE {bucket_of("e.seq")} = (SELECT min(n) FROM
        {newest_buckets("runs.created_seq", "runs.last_bucket", _NO_MARK)}) AND e.run_pk = runs.created_seq
        AND pos IS NOT NULL ORDER BY seq DESC LIMIT 1), 0) AS mark
    FROM runs WHERE run_id = ?
)
SELECT m.mark, s.{", s.".join(STEP_COLUMNS.split(", "))} FROM m LEFT JOIN steps s ON s.run_pk = m.pk"""
# INDEXED BY: the due ones only, in order (the status index would read every
# waiting run, questions without a timeout included, then sort them)
DUE_WAITS = (
    f"SELECT {RUN_COLUMNS} FROM runs INDEXED BY runs_wake_at WHERE status = 'waiting' AND wake_at <= ?"
    " ORDER BY wake_at, created_seq LIMIT ?"
)


def migrate(db: sqlite3.Connection, path: str) -> int:
    """Apply the migrations ``db`` lacks (inside the caller's transaction); return the version."""
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
    current: int = db.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
    if current > len(MIGRATIONS):
        raise StoreError(f"{path} has schema version {current}, newer than this runyard's {len(MIGRATIONS)}")
    for statement in MIGRATIONS[current:]:
        db.execute(statement)
    applied = [(version, time.time()) for version in range(current + 1, len(MIGRATIONS) + 1)]
    db.executemany("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", applied)
    return len(MIGRATIONS)


@functools.lru_cache(maxsize=16)
def insert_events(rows: int) -> str:
    """A multi-row INSERT of ``rows`` events. One statement per chunk, not one per
    row: each step releases and re-takes the GIL, and with the event loop busy
    every re-take waits (measured: 1,000 rows by executemany 4.5 s, 49 ms as
    multi-row statements). Chunk sizes are powers of two, so few statements are
    prepared and all stay in the statement cache."""
    row = "(" + ",".join("?" * len(EVENT_ROW)) + ")"
    return f"INSERT INTO events ({', '.join(EVENT_ROW)}) VALUES " + ",".join([row] * rows)
