"""Pulls run in one long-lived worker process, not in the serving process.

Parsing a page of 1,000 trades and building its rows holds the GIL for
milliseconds at a time; in the API process that showed up as /predict p99
going from 1.5 ms to 10 ms while a backfill ran. In a process of its own the
pull keeps its sources (and their HTTP clients, rate limiters and the live
synthetic market's state) on one persistent event loop, and writes the SQLite
file that the API process reads (WAL allows both).

The parent (`ingestion.pool.IngestPool`) watches this process and replaces it when it dies;
`init` makes it die with the parent in turn, so it is never left holding the
store after the API process is gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any, Literal

from app.market.backends import open_tick_store, store_errors
from app.market.sources import make_source
from app.market.sources.base import Source, SourceError
from app.market.storage import TickStorage
from app.services import lifeline
from app.services.ingestion.pull import PullResult, pull

log = logging.getLogger(__name__)

_loop: asyncio.AbstractEventLoop | None = None
_sources: dict[str, Source] = {}
_stores: dict[str, TickStorage] = {}
# the store could not be written (locked, read-only, full), or cannot be used as it is


# How a pull ended, as the parent tells its callers: "source" is the exchange's fault (502),
# "store" the tick store's (locked, read-only, full: 503), "error" anything else (a bug).
Outcome = Literal["ok", "source", "store", "error"]


def init(parent_pid: int) -> None:
    """Pool initializer. `parent_pid` is recorded by the parent before it spawns this process, so
    a parent that died while this one was still importing is noticed too."""
    lifeline.arm(parent_pid)
    # Ctrl-C (and a service manager's SIGTERM) reaches the whole process group: the parent stops this
    # worker itself (IngestPool.close), rather than seeing it die and reporting a death.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    lower_priority()


def ready() -> int:
    """The start-up probe of a replacement worker: an answer means it started and `init` ran."""
    return os.getpid()


def lower_priority() -> None:
    """Pool initializer: ingestion is background work; on a small machine the API process
    should win the CPU when both want it."""
    try:
        os.nice(10)
    except OSError:  # not permitted here: run at normal priority
        pass


def run_pull(
    store_path: str,
    exchange: str,
    symbol: str,
    base_url: str | None,
    source_kw: dict[str, Any],
    start: float | None,
) -> tuple[Outcome, PullResult | str]:
    """("ok", PullResult) or (kind, message): exceptions of every source module need not
    survive pickling back to the parent, but what they mean for the caller must."""
    try:
        loop, store, source = _opened(store_path, exchange, base_url, source_kw)
        result = loop.run_until_complete(pull(store, source, exchange, symbol, start=start))
        return "ok", result
    except SourceError as e:
        return "source", f"{type(e).__name__}: {e}"
    except store_errors(store_path) as e:
        return "store", f"{type(e).__name__}: {e}"
    except Exception as e:
        log.exception("pull %s:%s failed", exchange, symbol)
        return "error", f"{type(e).__name__}: {e}"


def _opened(
    store_path: str, exchange: str, base_url: str | None, source_kw: dict[str, Any]
) -> tuple[asyncio.AbstractEventLoop, TickStorage, Source]:
    """The worker's loop, store and source, opened by the first call that needs them and kept."""
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
    if exchange not in _sources:
        _sources[exchange] = make_source(exchange, base_url, **source_kw)
    store = _stores.get(store_path)
    if store is None:
        store = _stores[store_path] = open_tick_store(store_path)
    return _loop, store, _sources[exchange]


def prepare(store_path: str, exchanges: dict[str, tuple[str | None, dict[str, Any]]]) -> None:
    """Open the store and each exchange's source (base URL, keywords) before any pull: a standby
    replica that takes a market over then pulls at once, not after a connection and an HTTP
    client are made. What cannot be opened now is left to the first pull, which says why."""
    for exchange, (base_url, source_kw) in exchanges.items():
        try:
            _opened(store_path, exchange, base_url, source_kw)
        except Exception as e:
            log.info("ingest worker: %s not prepared (%s); its first pull tries again", exchange, e)
