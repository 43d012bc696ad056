"""The PostgreSQL store's schema: its migrations (append-only: the position is the
version) and its SQL; records and models convert through ``store._rows``.

JSON values (input, output, error, metadata, message content) are stored as
``json``, which keeps the exact text the store wrote (``jsonb`` would reject a
``\\u0000`` that SQLite accepts), and travel as the same orjson text as in the
SQLite store. Event ``data`` is ``bytea``: the bytes come back exactly as appended.
Identifiers use the "C" collation: they are compared and sorted as bytes, which
is faster in every index and gives every process the same lock order.
"""

from __future__ import annotations

from runyard.models import UNFINISHED as UNFINISHED_STATUSES
from runyard.store._rows import RUN_COLUMNS, RUN_FIELDS, SESSION_COLUMNS, STEP_COLUMNS

# pg_advisory_xact_lock key serialising migrations across processes: b"runyard:" as an int64
MIGRATION_LOCK = 0x72756E796172643A

VERSION_TABLE = """CREATE TABLE IF NOT EXISTS runyard_schema_version (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""

# The one statement of which statuses are unfinished (``models.UNFINISHED``): a
# waiting run holds its session as a queued or running one does.
_UNFINISHED_VALUES = ", ".join(f"'{status.value}'" for status in sorted(UNFINISHED_STATUSES))
UNFINISHED = f"status IN ({_UNFINISHED_VALUES})"

# Append-only: the position is the version. Never edit an entry; add one.
MIGRATIONS: list[str] = [
    """CREATE TABLE sessions (
        session_id text COLLATE "C" PRIMARY KEY,
        owner text COLLATE "C" NOT NULL,
        created_at float8 NOT NULL,
        last_activity float8 NOT NULL,
        metadata json NOT NULL,
        deleted boolean NOT NULL DEFAULT false
    )""",
    "CREATE INDEX sessions_last_activity ON sessions (last_activity)",
    """CREATE TABLE messages (
        message_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        session_id text COLLATE "C" NOT NULL,
        role text NOT NULL,
        content json,
        ts float8 NOT NULL,
        extra json NOT NULL
    )""",
    "CREATE INDEX messages_session ON messages (session_id, message_id)",
    # last_seq lives in the row: append holds the row lock while it numbers events,
    # so the counter is gap-free across processes. Each batch rewrites the row;
    # fillfactor leaves room on the page for those rewrites to stay HOT updates.
    """CREATE TABLE runs (
        run_id text COLLATE "C" PRIMARY KEY,
        created_seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        session_id text COLLATE "C" NOT NULL,
        owner text COLLATE "C" NOT NULL,
        pipeline text NOT NULL,
        status text NOT NULL,
        input json,
        output json,
        error json,
        metadata json NOT NULL,
        created_at float8 NOT NULL,
        started_at float8,
        finished_at float8,
        last_seq integer NOT NULL DEFAULT 0,
        attempt integer NOT NULL,
        timeout_s float8,
        max_attempts integer NOT NULL,
        worker_id text,
        lease_expires_at float8
    ) WITH (fillfactor = 80)""",
    "CREATE INDEX runs_owner ON runs (owner, created_seq)",
    "CREATE INDEX runs_session ON runs (session_id, created_seq)",
    # also serves expired_leases: running runs are few, and leaving lease_expires_at
    # unindexed keeps lease renewals HOT updates
    "CREATE INDEX runs_status ON runs (status, created_seq)",
    "CREATE INDEX runs_finished_at ON runs (finished_at) WHERE finished_at IS NOT NULL",
    # no foreign key to runs: its per-row check would slow every batch; sweep_runs
    # deletes a run's events with it
    """CREATE TABLE events (
        run_id text COLLATE "C" NOT NULL,
        seq integer NOT NULL,
        type text NOT NULL,
        data bytea NOT NULL,
        ts float8 NOT NULL,
        PRIMARY KEY (run_id, seq)
    )""",
    "ALTER TABLE runs ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false",
    # when each owner was last served, for the claim's tie-break: one index seek per owner
    "CREATE INDEX runs_owner_started ON runs (owner, started_at)",
    # RUNYARD_QUOTA_RUNS: runs each owner created while a quota was set (runs may be
    # swept; this stays). Its row lock is what makes "exactly N" hold across processes.
    'CREATE TABLE owner_quota (owner text COLLATE "C" PRIMARY KEY, runs_created bigint NOT NULL)',
    """CREATE TABLE idempotency_keys (
        owner text COLLATE "C" NOT NULL,
        key text COLLATE "C" NOT NULL,
        fingerprint text NOT NULL,
        run_id text COLLATE "C" NOT NULL,
        created_at float8 NOT NULL,
        PRIMARY KEY (owner, key)
    )""",
    "CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at)",
    # the workers that claim runs, and the pipelines each serves: what says which
    # queued runs no live worker will ever claim
    'CREATE TABLE workers (worker_id text COLLATE "C" PRIMARY KEY, pipelines text[] NOT NULL,'
    " last_seen float8 NOT NULL)",
    # RUNYARD_MAX_RUN_BYTES: what a run's events weigh, kept beside last_seq under the
    # same row lock (runs stored before this count from 0)
    "ALTER TABLE runs ADD COLUMN stored_bytes bigint NOT NULL DEFAULT 0",
    # durable work (issue 12): what a waiting run waits for (a Wait as JSON), and
    # when that wait is due (its ``until``, kept apart so that it is indexed)
    "ALTER TABLE runs ADD COLUMN waiting json",
    "ALTER TABLE runs ADD COLUMN wake_at float8",
    "ALTER TABLE runs ADD COLUMN executed_s float8 NOT NULL DEFAULT 0",
    "CREATE INDEX runs_wake_at ON runs (wake_at) WHERE status = 'waiting'",
    # an event's replay position (``EventDraft.pos``); NULL for the runtime's events
    "ALTER TABLE events ADD COLUMN pos integer",
    # recorded steps: the first record of a step wins; no foreign key (sweep_runs
    # deletes a run's steps with it, as its events)
    """CREATE TABLE steps (
        run_id text COLLATE "C" NOT NULL,
        name text COLLATE "C" NOT NULL,
        n integer NOT NULL,
        result json NOT NULL,
        pos integer NOT NULL,
        at float8 NOT NULL,
        PRIMARY KEY (run_id, name, n)
    )""",
    # issue 13: store
    # the long-term store: an owner's items by namespace (parts joined by ".") and
    # key; embedding: float64s (``store.items.pack_vector``), ranked in Python
    """CREATE TABLE items (
        owner text COLLATE "C" NOT NULL,
        namespace text COLLATE "C" NOT NULL,
        key text COLLATE "C" NOT NULL,
        value json NOT NULL,
        created_at float8 NOT NULL,
        updated_at float8 NOT NULL,
        expires_at float8,
        embedding bytea,
        PRIMARY KEY (owner, namespace, key)
    )""",
    "CREATE INDEX items_expires_at ON items (expires_at) WHERE expires_at IS NOT NULL",
    # issue 13: crons
    # after_s: no worker claims the run before this time (NULL: at once)
    "ALTER TABLE runs ADD COLUMN scheduled_for float8",
    """CREATE TABLE crons (
        cron_id text COLLATE "C" PRIMARY KEY,
        owner text COLLATE "C" NOT NULL,
        pipeline text NOT NULL,
        input json,
        schedule text NOT NULL,
        timezone text NOT NULL,
        created_at float8 NOT NULL,
        updated_at float8 NOT NULL,
        next_run_at float8,
        enabled boolean NOT NULL,
        session_id text COLLATE "C",
        metadata json NOT NULL,
        webhook json,
        last_run_id text COLLATE "C",
        last_run_at float8
    )""",
    "CREATE INDEX crons_owner ON crons (owner, created_at)",
    "CREATE INDEX crons_due ON crons (next_run_at) WHERE enabled",
    # issue 13: session ids
    # an owner's sessions by activity: GET /v1/sessions pages through them newest first
    "CREATE INDEX sessions_owner_activity ON sessions (owner, last_activity, session_id)",
    # issue 13: session streams
    # Each session's events in the order they were committed: append takes the
    # session's counter row (after its runs' rows, in key order; nothing else locks
    # these rows, so no deadlock) and numbers the events from it, so a higher
    # number is always committed later and a reader paging by it never skips one.
    """CREATE TABLE session_streams (
        owner text COLLATE "C" NOT NULL,
        session_id text COLLATE "C" NOT NULL,
        last_seq bigint NOT NULL,
        PRIMARY KEY (owner, session_id)
    )""",
    "ALTER TABLE events ADD COLUMN session_seq bigint",
    # issue 13: webhooks
    # a run's webhook URL, and the deliveries owed (one per finished run with a
    # webhook, inserted by the append that finished it); due_at is when it may be
    # claimed: a claim moves it to its lease's end, a failure to the next try
    "ALTER TABLE runs ADD COLUMN webhook text",
    """CREATE TABLE webhook_outbox (
        run_id text COLLATE "C" PRIMARY KEY,
        url text NOT NULL,
        queued_at float8 NOT NULL,
        due_at float8 NOT NULL,
        attempts integer NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX webhook_outbox_due ON webhook_outbox (due_at)",
    # issue 18: traces
    # a run's W3C trace context (traceparent, then a newline and tracestate if
    # any): every execution of the run, on any worker, continues that trace
    "ALTER TABLE runs ADD COLUMN trace text",
    # issue 15: claims that cost what they claim, not what is queued (CLAIMABLE)
    "CREATE INDEX runs_queued ON runs (owner, created_seq) WHERE status = 'queued'",
    "CREATE INDEX runs_running ON runs (owner) WHERE status = 'running'",
    f"CREATE INDEX runs_session_unfinished ON runs (session_id, created_seq) WHERE {UNFINISHED}",
    # issue 15: claims planned without a stale picture of the queue. An ANALYZE of a
    # quiet table (autovacuum's) saw no queued run; after a burst of 16,000 creations the
    # planner still counted ~1 queued run and read the whole queue once per owner: a
    # claim of 40 took 8.3 s instead of 20 ms (bench/README.md, "A nineteenth round").
    # Without statistics on status, an equality on it is guessed at 0.5 % of the rows,
    # however full the queue is. Changing the column to its own type drops the
    # statistics taken before (it rebuilds the partial indexes that read status; the
    # table is not rewritten).
    "ALTER TABLE runs ALTER COLUMN status SET STATISTICS 0",
    "ALTER TABLE runs ALTER COLUMN status TYPE text",
]

INSERT_SESSION = f"INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
# the run (``RUN_FIELDS`` first, as ``run_from_row`` reads them) and fingerprint of an
# owner's idempotency key used since $3
IDEMPOTENT_RUN = (
    f"SELECT {', '.join('r.' + column for column in RUN_FIELDS)}, k.fingerprint"
    " FROM idempotency_keys k JOIN runs r ON r.run_id = k.run_id"
    " WHERE k.owner = $1 AND k.key = $2 AND k.created_at >= $3"
)

# The batch's runs, locked in one order every process shares: no deadlock between
# appends to overlapping runs.
LOCK_RUNS = (
    "SELECT run_id, status, last_seq, worker_id, attempt, lease_expires_at, stored_bytes, waiting, webhook,"
    " owner, session_id FROM runs WHERE run_id = ANY($1::text[]) ORDER BY run_id FOR UPDATE"
)
# The ready runs (each the oldest unfinished run of its session, of a pipeline the
# claiming worker serves: $2), fairest first:
# an owner's n-th ready run takes turn (its running runs, on every worker, + n);
# ties go to the owner served least recently, then to the oldest run. Read
# without locks; LOCK_CLAIMABLE then takes those no other worker is claiming.
# Its cost follows the owners with queued runs, not the queue's length: the
# owners are found by skipping through ``runs_queued`` (one index seek each);
# of each, its running runs and its last start are index lookups, and its ready
# runs are read in that index's order (a run behind an unfinished one of its
# session is passed over by one probe of ``runs_session_unfinished``). Only as
# many as can make the cut: when $1 owners have a ready run, the $1-th smallest
# first turn among them, ``bound``, is at least the turn of the $1-th run
# claimed, so an owner's n-th run is read only while its turn is at most that.
# That walk is not read when ``FRESH`` settles the claim: the first
# ready runs of owners never served, found among the $1 * FRESH_SCAN oldest
# queued runs. Such an owner (no run of theirs ever started, so none running: a
# claim, the only way into ``running``, sets ``started_at``) has its first ready
# run at turn 1 and first among the ties (``last`` NULL): $1 of them, oldest
# first, are what the walk would take. In a ramp of new users the walk seeks
# every owner with queued runs: a claim of 32 with 1,000 new owners waiting took
# 8.2 ms at 1,000 queued runs and 75.6 at 10,000, 3.8 and 3.4 with FRESH; with 20
# owners, all served before, it never settles and a claim costs 2-10 % more
# (``bench/claims.py --store postgres --owners 1000``, ``--owners 20``).
FRESH_SCAN = 2
_READY_RUNS = f"""SELECT r.run_id, r.created_seq FROM runs r
        WHERE r.owner = o.owner AND r.status = 'queued' AND r.pipeline = ANY($2::text[])
            AND (r.scheduled_for IS NULL OR r.scheduled_for <= $3)
            -- a subquery, not NOT EXISTS: as an anti join it read every unfinished run
            -- once per owner when the planner thought them few
            AND (SELECT 1 FROM runs p WHERE p.session_id = r.session_id
                AND p.created_seq < r.created_seq AND p.{UNFINISHED} LIMIT 1) IS NULL
        ORDER BY r.created_seq"""
CLAIMABLE = f"""WITH RECURSIVE owners AS (
    (SELECT owner FROM runs WHERE status = 'queued' ORDER BY owner LIMIT 1)
    UNION ALL
    SELECT (SELECT r.owner FROM runs r WHERE r.status = 'queued' AND r.owner > o.owner ORDER BY r.owner LIMIT 1)
    FROM owners o WHERE o.owner IS NOT NULL
), firsts AS (
    SELECT o.owner, b.running, s.last
    FROM owners o
    CROSS JOIN LATERAL (SELECT count(*) AS running FROM runs WHERE owner = o.owner AND status = 'running') b
    CROSS JOIN LATERAL (SELECT max(started_at) AS last FROM runs WHERE owner = o.owner) s
    CROSS JOIN LATERAL ({_READY_RUNS} LIMIT 1) f  -- not EXISTS: that may become a join over the whole queue
    WHERE o.owner IS NOT NULL
), bound AS (
    SELECT (SELECT running + 1 FROM firsts ORDER BY running LIMIT 1 OFFSET $1 - 1) AS turn
), ready AS (
    SELECT c.run_id, c.created_seq, o.last,
        o.running + row_number() OVER (PARTITION BY o.owner ORDER BY c.created_seq) AS turn
    FROM firsts o CROSS JOIN bound
    CROSS JOIN LATERAL ({_READY_RUNS} LIMIT greatest(0, least($1, bound.turn - o.running))) c
)
SELECT run_id FROM ready ORDER BY turn, last NULLS FIRST, created_seq LIMIT $1"""
FRESH = f"""SELECT run_id, created_seq FROM (
    SELECT DISTINCT ON (q.owner) q.run_id, q.created_seq
    FROM (SELECT run_id, created_seq, owner, session_id, pipeline, scheduled_for FROM runs
        WHERE status = 'queued' ORDER BY created_seq LIMIT $1 * {FRESH_SCAN}) q
    -- subqueries, not NOT EXISTS: as anti joins they read the whole table
    WHERE (SELECT max(started_at) FROM runs s WHERE s.owner = q.owner) IS NULL
        AND q.pipeline = ANY($2::text[]) AND (q.scheduled_for IS NULL OR q.scheduled_for <= $3)
        AND (SELECT 1 FROM runs p WHERE p.session_id = q.session_id
            AND p.created_seq < q.created_seq AND p.{UNFINISHED} LIMIT 1) IS NULL
    ORDER BY q.owner, q.created_seq
) firsts_of_new_owners ORDER BY created_seq LIMIT $1"""
# queued runs per pipeline that no worker seen since $1 serves, due by $2 (``after_s``: a
# run scheduled for later waits for no worker yet)
UNSERVED = """SELECT pipeline, count(*) FROM runs r WHERE status = 'queued'
    AND (scheduled_for IS NULL OR scheduled_for <= $2) AND NOT EXISTS
    (SELECT 1 FROM workers w WHERE w.last_seen >= $1 AND r.pipeline = ANY(w.pipelines)) GROUP BY pipeline"""
# SKIP LOCKED: a run another worker is claiming right now is left to it, never waited for
# (so the candidates' order, the walk's, cannot deadlock); only the $2 runs the claim
# takes are locked, not every candidate until its commit, which left another worker's
# claim meanwhile with none of them. With what numbering needs of a run besides the
# run (``events.append_locked``). Each candidate is looked up by its key, in the
# candidates' order, until $2 are locked: the lateral subquery holds the lock, so it
# is a nested loop over the array, which no plan can turn into a scan of the queue.
# As a join it could: planned on the guess that 0.5 % of runs are queued, the lock
# of 24 candidates read all 10,000 queued runs through runs_queued (4.5-7.7 ms a
# lock instead of 0.06; bench/README.md, "A twenty-second round").
LOCK_CLAIMABLE = f"""SELECT r.* FROM unnest($1::text[]) AS c(run_id)
CROSS JOIN LATERAL (SELECT {RUN_COLUMNS}, cancel_requested, stored_bytes FROM runs
    WHERE runs.run_id = c.run_id AND status = 'queued' FOR UPDATE SKIP LOCKED) r
LIMIT $2"""
INSERT_STEPS = (
    f"INSERT INTO steps (run_id, {STEP_COLUMNS})"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::json[], $5::int4[], $6::float8[])"
    " ON CONFLICT DO NOTHING"
)
# A run's recorded steps and its replay mark (the pos of its last event that has
# one), in one statement: one snapshot, so the two agree. A run without steps
# gives one row of NULL step columns.
REPLAY = f"""SELECT m.mark, s.{", s.".join(STEP_COLUMNS.split(", "))} FROM (
    SELECT coalesce((SELECT pos FROM events WHERE run_id = $1 AND pos IS NOT NULL ORDER BY seq DESC LIMIT 1), 0) AS mark
) m LEFT JOIN steps s ON s.run_id = $1"""
DUE_WAITS = (
    f"SELECT {RUN_COLUMNS} FROM runs WHERE status = 'waiting' AND wake_at <= $1 ORDER BY wake_at, created_seq LIMIT $2"
)

# Retention (``_sweep``): expired runs, a chunk of a run's oldest events (up to $2
# events, and $3 bytes of data but at least one event), then the runs themselves.
EXPIRED_RUNS = f"SELECT run_id FROM runs WHERE NOT {UNFINISHED} AND finished_at < $1 ORDER BY finished_at LIMIT $2"
EVENT_WEIGHTS = (
    "SELECT run_id, count(*), coalesce(sum(octet_length(data)), 0) FROM events"
    " WHERE run_id = ANY($1::text[]) GROUP BY run_id"
)
DELETE_EVENT_CHUNK = """WITH chunk AS (
    SELECT seq, sum(octet_length(data)) OVER (ORDER BY seq) AS upto FROM events WHERE run_id = $1 ORDER BY seq LIMIT $2
), gone AS (
    DELETE FROM events WHERE run_id = $1
    AND seq <= (SELECT coalesce(max(seq) FILTER (WHERE upto <= $3::int8), min(seq)) FROM chunk)
    RETURNING 1
)
SELECT count(*) FROM gone"""
STEP_WEIGHTS = (
    "SELECT run_id, count(*), coalesce(sum(octet_length(result::text)), 0) FROM steps"
    " WHERE run_id = ANY($1::text[]) GROUP BY run_id"
)
# at least one step, then as many as fit in $3 bytes, up to $2
DELETE_STEP_CHUNK = """WITH chunk AS (
    SELECT name, n, row_number() OVER w AS i, sum(octet_length(result::text)) OVER w AS upto
    FROM steps WHERE run_id = $1 WINDOW w AS (ORDER BY name, n) ORDER BY name, n LIMIT $2
), gone AS (
    DELETE FROM steps s USING chunk c WHERE s.run_id = $1 AND s.name = c.name AND s.n = c.n
    AND (c.upto <= $3::int8 OR c.i = 1) RETURNING 1
)
SELECT count(*) FROM gone"""
DELETE_RUNS = f"""WITH gone_events AS (DELETE FROM events WHERE run_id = ANY($1::text[])),
gone_steps AS (DELETE FROM steps WHERE run_id = ANY($1::text[])),
gone AS (DELETE FROM runs WHERE run_id = ANY($1::text[]) AND NOT {UNFINISHED} RETURNING 1)
SELECT count(*) FROM gone"""
