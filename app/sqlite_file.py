"""One SQLite file, three owners: the tick store, the job store and the prediction log each keep
their own connection to it, opened and written the same way here.

Autocommit mode (`isolation_level=None`) so that every transaction is opened explicitly and
nothing commits behind a caller's back; WAL so that readers never wait for the writer; one
`BEGIN IMMEDIATE` per write, so two writers take turns on the file's lock (for up to the
busy timeout) instead of failing half-way through.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BUSY_TIMEOUT_S = 5.0  # how long a write waits for another writer's lock before it fails


def connect(
    path: str | Path, *, synchronous: str = "FULL", timeout: float = BUSY_TIMEOUT_S
) -> sqlite3.Connection:
    """A connection shared by threads (each owner guards it with its own lock). FULL: a commit
    survives power loss; NORMAL: a power cut may lose the last commits, never corrupt."""
    memory = str(path) == ":memory:"
    if not memory:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=timeout)
    try:
        if not memory:
            db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
    except BaseException:
        db.close()
        raise
    return db


@contextmanager
def immediate(db: sqlite3.Connection, lock: threading.Lock | threading.RLock) -> Iterator[sqlite3.Connection]:
    """One write transaction under `lock`: committed when the block ends, rolled back if it raises."""
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
