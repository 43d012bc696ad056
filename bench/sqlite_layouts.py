"""What a SQLite append costs as the events table grows, for several layouts of
the table and its run index, on raw ``sqlite3`` (no runyard code): the question
behind an append's cost growing with the table (``bench/README.md``, "A
fifteenth round" and "A sixteenth round").

Each layout gets a fresh file with the store's writer pragmas and ``--runs``
runs; ``--batches`` transactions each insert ``--batch`` events of consecutive
runs taken in turn (the shape of ``streams.py --scenarios steady``: one event
of each of many runs a batch). Every tenth of the way it prints the process's
CPU per event and the bytes it wrote per event (``/proc/self/io``'s wchar: the
WAL's frames and the checkpoints' copies). The layouts:

- ``index``: the store's layout until de2abf7: events in arrival order (rowid)
  and a unique index on (run key, seq). Once a run's entries fill an index
  page of their own, every event dirties its run's leaf, so a batch of 50
  events writes ~50 index pages to the WAL.
- ``bucketed``: the store's layout since: the index on (seq >> 4, run key,
  seq). The newest entries of runs written together sit together.
- ``none``: the same table without the index: the floor (no run can be read).
- ``deferred``: no index on the events; a WITHOUT ROWID table of (run key, seq,
  rowid) filled every ``--flush`` events by one sorted ``INSERT ... SELECT``
  of the events since the last fill, inside the batch's transaction: each run's
  leaf is dirtied once a fill, not once an event, and the longest fill is the
  stall every event committed with it would wait. (A store built this way would
  also have to find the events not yet indexed, in memory; this measures the
  writes only.)

Run it from the repository root::

    .venv/bin/python bench/sqlite_layouts.py                        # ~2 min, 1 M events each
    .venv/bin/python bench/sqlite_layouts.py --layouts index,bucketed --order random
    .venv/bin/python bench/sqlite_layouts.py --layouts index --page-size 16384
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import tempfile
import time

# the store's writer (``store/sqlite/connection.py``'s WRITER_PRAGMAS), without its busy timeout
PRAGMAS = (
    "PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
    " PRAGMA secure_delete = FAST; PRAGMA wal_autocheckpoint = 10000;"
)
EVENTS = """CREATE TABLE events (id INTEGER PRIMARY KEY, run_pk INTEGER NOT NULL, seq INTEGER NOT NULL,
    type TEXT NOT NULL, data BLOB NOT NULL, ts REAL NOT NULL, pos INTEGER)"""
SCHEMAS = {
    "index": [EVENTS, "CREATE UNIQUE INDEX events_run_seq ON events (run_pk, seq)"],
    "none": [EVENTS],
    "bucketed": [EVENTS, "CREATE UNIQUE INDEX events_bucket_run_seq ON events (seq >> 4, run_pk, seq)"],
    "deferred": [
        EVENTS,
        "CREATE TABLE event_index (run_pk INTEGER NOT NULL, seq INTEGER NOT NULL, id INTEGER NOT NULL,"
        " PRIMARY KEY (run_pk, seq)) WITHOUT ROWID",
    ],
}
INSERT = "INSERT INTO events (run_pk, seq, type, data, ts, pos) VALUES (?, ?, ?, ?, ?, ?)"
FILL = "INSERT INTO event_index SELECT run_pk, seq, id FROM events WHERE id > ? ORDER BY run_pk, seq"
DATA = b'{"marker": "run_123", "i": 12345, "t": 1796440000.123, "pad": "' + b"x" * 200 + b'"}'


def written() -> int:
    """Bytes this process has written so far (page cache included)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("wchar:"))


def measure(layout: str, path: str, args: argparse.Namespace) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA page_size = {args.page_size}")
    db.executescript(PRAGMAS)
    for statement in SCHEMAS[layout]:
        db.execute(statement)
    seqs = [0] * args.runs
    chooser = random.Random(1)
    run, indexed, pending, fill_cpu, longest_fill = 0, 0, 0, 0.0, 0.0
    part = max(1, args.batches // 10)
    cpu, wrote = time.process_time(), written()
    for i in range(args.batches):
        rows = []
        for _ in range(args.batch):
            if args.order == "random":
                run = chooser.randrange(args.runs)
            seqs[run] += 1
            rows.append((run + 1, seqs[run], "tick", DATA, time.time(), None))
            run = (run + 1) % args.runs
        db.execute("BEGIN IMMEDIATE")
        db.executemany(INSERT, rows)
        pending += args.batch
        if layout == "deferred" and pending >= args.flush:
            started, began = time.process_time(), time.perf_counter()
            db.execute(FILL, (indexed,))
            indexed, pending = db.execute("SELECT max(id) FROM events").fetchone()[0], 0
            fill_cpu += time.process_time() - started
            longest_fill = max(longest_fill, time.perf_counter() - began)
        db.execute("COMMIT")
        if (i + 1) % part == 0:
            n = part * args.batch
            now, wrote_now = time.process_time(), written()
            fills = ""
            if layout == "deferred":
                fills = f" (fills {fill_cpu / n * 1e6:4.1f}, longest {longest_fill * 1e3:.0f} ms)"
            print(
                f"{layout:8} {(i + 1) * args.batch:>9,} events: CPU {(now - cpu) / n * 1e6:5.1f} µs an event{fills},"
                f" written {(wrote_now - wrote) / n / 1024:5.2f} KiB an event",
                flush=True,
            )
            cpu, wrote, fill_cpu, longest_fill = now, wrote_now, 0.0, 0.0
    db.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layouts", default="index,none,deferred", help="comma-separated, of: " + ", ".join(SCHEMAS))
    ap.add_argument("--runs", type=int, default=1000, help="runs the events are spread over")
    ap.add_argument("--batch", type=int, default=50, help="events a transaction, one of each of consecutive runs")
    ap.add_argument("--batches", type=int, default=20000, help="transactions")
    ap.add_argument(
        "--order", choices=("turn", "random"), default="turn", help="the runs of a batch: in turn, or drawn at random"
    )
    ap.add_argument("--flush", type=int, default=16000, help="deferred: events between two fills of the index")
    ap.add_argument("--page-size", type=int, default=4096, help="the file's page size")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for layout in args.layouts.split(","):
            measure(layout, os.path.join(tmp, f"{layout}.db"), args)


if __name__ == "__main__":
    main()
