"""How a retention sweep is cut into short writes, shared by the SQL backends.

A run's events are deleted a chunk at a time, each chunk its own write, so a
writer waits behind one chunk at most, never behind a whole run: a run may hold
``RUNYARD_MAX_RUN_BYTES`` (256 MiB) of events, and deleting such a run in one
transaction held SQLite's only writer for 1.1-1.4 s (measured on 2.2 GB).
"""

from __future__ import annotations

from collections.abc import Sequence

SWEEP_RUNS = 64  # expired runs looked up at a time
# A chunk ends at whichever comes first: this many events, or this many bytes of
# their data (at least one event). Measured on SQLite with 64 KiB events (2 busy
# cores): a 4 MiB chunk is a write of 0.5 ms (max 1.1 ms) with secure_delete = FAST,
# 38 ms (p90 167 ms) with the SECURE_DELETE that Debian's build turns on.
CHUNK_EVENTS = 512
CHUNK_BYTES = 4 * 1024 * 1024


def chunk_end(sizes: Sequence[tuple[int, int]], max_bytes: int) -> int:
    """The last seq of the chunk that starts ``sizes`` ((seq, bytes) in seq order, not empty)."""
    total = 0
    last = sizes[0][0]
    for seq, size in sizes:
        total += size
        if total > max_bytes and seq != sizes[0][0]:
            break
        last = seq
    return last
