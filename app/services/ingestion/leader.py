"""One ingesting replica per market, when several replicas share one PostgreSQL database.

Two replicas pulling the same market would fetch every page twice and race on its cursor. So a
market is pulled only by the replica that holds its session-level advisory lock, taken with
`pg_try_advisory_lock` on a connection the replica keeps open for nothing else. PostgreSQL
releases a session's locks when its connection ends, however the replica ends (kill -9
included: the kernel closes the socket), so another replica takes the market over at its next
try, and resumes from the stored cursor (ticks and cursor commit together), losing and
doubling nothing.

Each round (`refresh`, before the pull round, off the event loop) reads back which locks this
session really holds (that also proves the connection is alive), then tries the configured
markets it does not hold, up to `max_markets`, so that many markets spread over replicas. When
the lock connection fails, every market is dropped at once (another replica may hold them by
now) and the next round reconnects. A round that has not succeeded for `valid_s` (a database
that stopped answering) makes `holds` say no as well: a replica that cannot prove it leads
does not pull.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app import pg
from app.database import redact

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

LOCK_SPACE = "tickcast-ingest"  # the first key of every market lock: other advisory locks never clash
STATEMENT_TIMEOUT_MS = 5_000  # a round that cannot finish in this is a database in trouble

Key = tuple[str, str]  # (exchange, symbol)

# The locks of `keys` (text[]) this session holds now, read from pg_locks: the two-key form of
# pg_try_advisory_lock shows as classid/objid (their int4 hashes as oid) with objsubid 2.
_HELD = (
    "SELECT k FROM unnest(%s::text[]) AS k WHERE EXISTS (SELECT 1 FROM pg_locks l"
    " WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.granted AND l.objsubid = 2"
    " AND l.classid = hashtext(%s)::oid AND l.objid = hashtext(k)::oid)"
)
_TRY = "SELECT pg_try_advisory_lock(hashtext(%s), hashtext(%s))"


def lock_name(exchange: str, symbol: str) -> str:
    """The lock's second key, hashed by PostgreSQL: also the NOTIFY payload naming the market."""
    return f"{exchange}:{symbol}"


@dataclass(frozen=True)
class Round:
    """What one round changed: markets this replica took, and markets it no longer holds."""

    gained: frozenset[Key] = field(default_factory=frozenset)
    lost: frozenset[Key] = field(default_factory=frozenset)


class MarketLeases:
    """The advisory locks of the configured markets this replica holds. `refresh` and `close`
    block (call them from a thread); `holds` is a read of what the last round found."""

    def __init__(
        self,
        url: str,
        markets: Iterable[Key],
        *,
        max_markets: int = 0,
        valid_s: float = 5.0,
        connect: Callable[[str], psycopg.Connection[Any]] | None = None,
    ) -> None:
        self.url = url
        self.markets = list(dict.fromkeys(markets))  # tried in their configured order
        self.max_markets = max_markets  # 0: no limit
        self.valid_s = valid_s
        self._connect = connect or (lambda u: pg.connect(u, part="ingest-lock", autocommit=True))
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()  # one round (or close) at a time
        self._held: frozenset[Key] = frozenset()
        self._confirmed = 0.0  # time.monotonic() of the last round that succeeded
        self.last_error: str | None = None

    @property
    def held(self) -> frozenset[Key]:
        """The markets the last round found held, while that round is recent enough to trust."""
        if time.monotonic() - self._confirmed > self.valid_s:
            return frozenset()
        return self._held

    def holds(self, exchange: str, symbol: str) -> bool:
        return (exchange, symbol) in self.held

    def refresh(self) -> Round:
        """One round: confirm the locks held, take free ones up to the limit. Never raises for
        the database's sake: a failed round holds nothing and says why in `last_error`."""
        with self._lock:
            before = self._held
            try:
                held = self._round()
            except pg.errors() as e:
                self._drop(e)
                held = frozenset()
            else:
                self._confirmed = time.monotonic()
                self.last_error = None
            self._held = held
        return Round(held - before, before - held)

    def _round(self) -> frozenset[Key]:
        conn = self._conn
        if conn is None:
            conn = self._conn = self._connect(self.url)
            conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        names = [lock_name(*m) for m in self.markets]
        rows = conn.execute(_HELD, (names, LOCK_SPACE)).fetchall()
        mine = {str(r[0]) for r in rows}
        held = {m for m in self.markets if lock_name(*m) in mine}
        for m in self.markets:
            if self.max_markets and len(held) >= self.max_markets:
                break
            if m in held:
                continue
            row = conn.execute(_TRY, (LOCK_SPACE, lock_name(*m))).fetchone()
            if row is not None and row[0]:
                held.add(m)
                log.info("ingesting %s here: this replica took its lock", lock_name(*m))
        return frozenset(held)

    def _drop(self, e: BaseException) -> None:
        """The lock connection failed: whatever it held may be another replica's by now."""
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if self._held:
            log.warning(
                "the ingestion lock connection to %s failed (%s): pulling nothing until a new one "
                "takes the markets' locks again",
                redact(self.url),
                why,
            )
        self.last_error = f"the ingestion lock connection failed: {why}"
        self._close_conn()

    def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a broken connection may complain; it is gone either way
                pass

    def close(self) -> None:
        """Let the markets go now (closing the session releases its locks), so another replica
        takes them at its next round rather than when this process is gone."""
        with self._lock:
            self._close_conn()
            self._held = frozenset()
