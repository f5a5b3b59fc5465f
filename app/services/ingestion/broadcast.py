"""New ticks, told to every replica: streams and live scoring react within a moment, wherever
the market is pulled.

A replica that stores ticks (its pulls as the market's leader, a CSV import) wakes its own
streams at once, then sends `NOTIFY tickcast_ticks, '<exchange>:<symbol>'`. Every replica
LISTENs on that channel (`app.pg.Listener`, its own connection and thread) and wakes its
streams and live scoring for the market, except for the notifications it sent itself (its
hooks ran already): it counts what it sent and skips that many of each when they come back,
so the leader does not wake its streams twice per pull, yet hears another replica's import of
the market it pulls. Notifications sent while a listener was reconnecting are lost, so after a
reconnect every market is looked at (`on_resync`) and the counts start afresh. Without
notifications the feeds still poll the store every `stream_poll_s`: a lost one costs latency,
never a tick.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from app import pg
from app.services.ingestion.leader import lock_name

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

CHANNEL = "tickcast_ticks"


class TickBroadcast:
    """Sends this replica's "ticks stored" to the others and hands theirs to `on_ticks` on the
    event loop. `publish` is called on the loop and never waits on the database."""

    def __init__(
        self,
        url: str,
        *,
        on_ticks: Callable[[str, str], None],
        on_resync: Callable[[], None],
    ) -> None:
        """`on_ticks(exchange, symbol)`: another replica stored ticks of the market; `on_resync()`:
        notifications may have been missed, look at every market."""
        self.url = url
        self.on_ticks, self.on_resync = on_ticks, on_resync
        self._own: Counter[str] = Counter()  # sent here and not heard back yet, per payload
        self._own_lock = threading.Lock()
        self._listener = pg.Listener(url, (CHANNEL,), self._heard, part="broadcast-listen")
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ticks-notify")
        self._conn: psycopg.Connection[Any] | None = None  # the sender's; used by its thread only
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = threading.Event()

    @property
    def ready(self) -> threading.Event:
        """Set once the listener's LISTEN is in place."""
        return self._listener.ready

    def start(self) -> None:
        """On the event loop the hooks must run on."""
        self._loop = asyncio.get_running_loop()
        self._listener.start()

    def publish(self, exchange: str, symbol: str) -> None:
        """Tell the other replicas (in the sender's thread, in order; dropped when it fails)."""
        if self._closed.is_set():
            return
        payload = lock_name(exchange, symbol)
        if self._listener.ready.is_set():  # our listener hears it back: skip it then
            self._count(payload, 1)
        self._sender.submit(self._send, payload)

    def _count(self, payload: str, n: int) -> bool:
        """Add n to the payload's count of our own notifications not heard back yet; False when
        it had none to take."""
        with self._own_lock:
            if self._own[payload] + n < 0:
                return False
            self._own[payload] += n
            return True

    def _send(self, payload: str) -> None:
        for attempt in (1, 2):  # a connection the server dropped since the last send: a fresh one
            try:
                if self._conn is None:
                    self._conn = pg.connect(self.url, part="broadcast-send", autocommit=True)
                pg.notify(self._conn, CHANNEL, payload)
                return
            except pg.errors() as e:
                self._close_conn()
                if attempt == 2:
                    self._count(payload, -1)  # never sent: nothing comes back to skip
                    log.warning("could not tell the other replicas of new %s ticks: %s", payload, e)

    def _heard(self, channel: str, payload: str | None) -> None:
        """In the listener's thread: hop onto the loop, where the feeds and live scoring live."""
        loop = self._loop
        if loop is None or self._closed.is_set():
            return
        try:
            if payload is None:
                with self._own_lock:  # what was sent while not listening never comes back
                    self._own.clear()
                loop.call_soon_threadsafe(self.on_resync)
                return
            exchange, sep, symbol = payload.partition(":")
            if sep and not self._count(payload, -1):  # not one of ours
                loop.call_soon_threadsafe(self.on_ticks, exchange, symbol)
        except RuntimeError:  # the loop closed meanwhile: the service is stopping
            pass

    def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # a broken connection may complain as it closes; it is gone either way
                pass

    def close(self) -> None:
        """Stop listening and sending (blocks for up to a listener poll, half a second)."""
        self._closed.set()
        self._listener.stop()
        self._sender.shutdown(wait=True, cancel_futures=True)
        self._close_conn()

    async def stop(self) -> None:
        await asyncio.to_thread(self.close)
