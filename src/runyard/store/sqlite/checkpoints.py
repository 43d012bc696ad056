"""The SQLite WAL's checkpoints, copied in a thread of their own.

A checkpoint copies the pages committed to the WAL back into the database file.
Left to SQLite, the commit that takes the WAL past ``wal_autocheckpoint`` pages
copies all of them itself, in the committing connection: here the writer
thread, so every write of the process waited for it. Under 1,000 streams x 10
events/s the WAL passed 10,000 pages every 1-3 s, and each time every stream's
events were held 50-70 ms (``bench/README.md``, "A seventh round").

Here a connection of this thread's own runs a PASSIVE checkpoint every
``every_s``: it copies the pages no reader still needs without taking the write
lock, so the writer goes on committing meanwhile. The writer's own
autocheckpoint stays: when it comes, the pages are already copied but the last
few, and it is the one that lets the next transaction start the WAL over from
its beginning (a checkpoint here rarely finds the writer idle), so the file
stays bounded as before.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger("runyard.store")

# Each copy writes the pages changed since the last one, a hot index page again each
# time: every 0.1 s cost 1.5-2.4 us more CPU per event under the steady load, every
# 0.5 s nothing measurable, for the same tail (p99 once all streams were live: 9-11
# ms at 0.1 s, 11-12 ms at 0.5 s, 45 ms without this thread).
EVERY_S = 0.5


class Checkpointer:
    """Copies the WAL of the database at ``path`` into it every ``every_s`` seconds,
    from ``start`` to ``stop``, in a daemon thread with its own connection."""

    def __init__(self, path: str, every_s: float = EVERY_S) -> None:
        self.path = path
        self.every_s = every_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="runyard-sqlite-checkpoints", daemon=True)
        self.copies = 0  # checkpoints run, for tests

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Returns once the thread has ended (after the copy in progress, if any)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        try:
            # no busy timeout: a PASSIVE checkpoint never waits for a lock
            db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            log.warning("no background checkpoints of %s (the writer checkpoints alone): %s", self.path, exc)
            return
        try:
            while not self._stopping.wait(self.every_s):
                self._copy(db)
        finally:
            db.close()  # never the last connection: the writer closes after this thread has ended

    def _copy(self, db: sqlite3.Connection) -> None:
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.copies += 1
        except sqlite3.Error as exc:  # the next one tries again; the writer's checkpoints go on meanwhile
            log.warning("a background checkpoint of %s failed: %s", self.path, exc)
