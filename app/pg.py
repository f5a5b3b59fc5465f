"""PostgreSQL connections, opened the same way by every part that keeps state there (ticks, jobs,
models, the prediction log, the replicas' locks and notifications).

psycopg 3 is imported here and only here, and only when a postgresql:// target is opened: the
embedded default never loads it. Every connection names itself (`application_name`) so that
`pg_stat_activity` shows which replica and which part holds it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from app.database import redact

if TYPE_CHECKING:
    import psycopg

CONNECT_TIMEOUT_S = 5

log = logging.getLogger(__name__)


class PostgresMissing(RuntimeError):
    """psycopg is not installed, so a postgresql:// target cannot be opened."""


def driver() -> Any:
    """The psycopg module, or a PostgresMissing that says how to install it."""
    try:
        import psycopg
    except ImportError as e:  # pragma: no cover - psycopg is a dependency; a broken install
        raise PostgresMissing(
            "a postgresql:// database needs psycopg 3: pip install 'psycopg[binary]>=3.1'"
        ) from e
    return psycopg


def connect(url: str, *, part: str, autocommit: bool = False) -> psycopg.Connection[Any]:
    """A new connection to `url`; `part` (tickstore, jobs, listener...) names it in pg_stat_activity."""
    pg = driver()
    try:
        conn = pg.connect(
            url,
            autocommit=autocommit,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name=f"tickcast-{part}-{os.getpid()}",
        )
    except pg.OperationalError as e:
        # psycopg's message may quote the URL: say which database without its password
        raise pg.OperationalError(f"cannot connect to {redact(url)}: {_first_line(e)}") from None
    return cast("psycopg.Connection[Any]", conn)


def errors() -> tuple[type[Exception], ...]:
    """The exceptions by which PostgreSQL says it cannot answer now (lost connection, server gone,
    a lock or statement timeout): callers answer them with "retry later"."""
    pg = driver()
    return (pg.OperationalError, pg.InterfaceError, pg.errors.QueryCanceled)


class SchemaTooNew(RuntimeError):
    """The database holds a schema written by a newer tickcast."""


def migrate(
    conn: psycopg.Connection[Any], table: str, migrations: tuple[tuple[str, ...], ...], what: str
) -> int:
    """Bring one part's tables to the newest version, in one transaction; the version is kept in
    `table` (one row), as each SQLite part keeps its own. Replicas starting together take turns on
    a transaction-level advisory lock, so each step runs once. Returns the version now held.

    Entry i of `migrations` takes the schema from version i to i + 1: append, never edit."""
    newest = len(migrations)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"tickcast-schema-{table}",))
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (version INTEGER NOT NULL)")
        row = conn.execute(f"SELECT version FROM {table}").fetchone()
        version = 0 if row is None else int(row[0])
        if version > newest:
            raise SchemaTooNew(
                f"the database holds {what} schema version {version}, but this tickcast knows versions "
                f"up to {newest}; upgrade tickcast to use it"
            )
        for v in range(version, newest):
            for stmt in migrations[v]:
                conn.execute(stmt)
        conn.execute(f"DELETE FROM {table}")
        conn.execute(f"INSERT INTO {table} (version) VALUES (%s)", (newest,))
    return newest


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


class Listener:
    """LISTEN on some channels on a connection of its own, in a daemon thread, and hand every
    notification to `on_notify(channel, payload)`. After a lost connection it reconnects (with
    backoff) and calls `on_notify(channel, None)` for each channel: notifications sent meanwhile
    are lost, so a part hearing None re-reads what it follows instead of trusting an event."""

    def __init__(
        self, url: str, channels: tuple[str, ...], on_notify: Callable[[str, str | None], None], *, part: str
    ) -> None:
        self.url, self.channels, self.on_notify, self.part = url, channels, on_notify, part
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self.ready = threading.Event()  # set once the first LISTEN is in place

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"pg-listen-{self.part}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        delay, first = 0.2, True
        while not self._stop.is_set():
            try:
                with connect(self.url, part=self.part, autocommit=True) as conn:
                    for ch in self.channels:
                        conn.execute(f"LISTEN {ch}")
                    self.ready.set()
                    if not first:
                        for ch in self.channels:
                            self._hand(ch, None)
                    first, delay = False, 0.2
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=0.5):
                            self._hand(n.channel, n.payload)
            except Exception as e:  # a lost connection or server: try again, and say so once a try
                if self._stop.is_set():
                    return
                log.warning("%s: listening lost (%s); reconnecting in %.1f s", self.part, e, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)

    def _hand(self, channel: str, payload: str | None) -> None:
        try:
            self.on_notify(channel, payload)
        except Exception:  # a bug in a handler must not stop the listening
            log.exception("%s: handling a notification on %s failed", self.part, channel)


def notify(conn: psycopg.Connection[Any], channel: str, payload: str) -> None:
    """Send a notification; inside a transaction it is delivered when (and only if) that commits."""
    conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))
