"""Pulls run in one long-lived worker process, not in the serving process.

Parsing a page of 1,000 trades and building its rows holds the GIL for
milliseconds at a time; in the API process that showed up as /predict p99
going from 1.5 ms to 10 ms while a backfill ran. In a process of its own the
pull keeps its sources (and their HTTP clients, rate limiters and the live
synthetic market's state) on one persistent event loop, and writes the SQLite
file that the API process reads (WAL allows both).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from app.market.sources import make_source
from app.market.store import TickStore
from app.services.ingest import PullResult, pull

log = logging.getLogger(__name__)

_loop: asyncio.AbstractEventLoop | None = None
_sources: dict[str, Any] = {}
_stores: dict[str, TickStore] = {}


def lower_priority() -> None:
    """Pool initializer: ingestion is background work; on a small machine the API process
    should win the CPU when both want it."""
    try:
        os.nice(10)
    except OSError:  # not permitted here: run at normal priority
        pass


def run_pull(store_path: str, exchange: str, symbol: str, base_url: str | None,
             source_kw: dict[str, Any], start: float | None) -> tuple[str, Any]:
    """("ok", PullResult) or ("error", message): exceptions of every source module need not
    survive pickling back to the parent."""
    global _loop
    try:
        if _loop is None:
            _loop = asyncio.new_event_loop()
        if exchange not in _sources:
            _sources[exchange] = make_source(exchange, base_url, **source_kw)
        store = _stores.get(store_path)
        if store is None:
            store = _stores[store_path] = TickStore(store_path)
        result: PullResult = _loop.run_until_complete(
            pull(store, _sources[exchange], exchange, symbol, start=start))
        return "ok", result
    except Exception as e:  # noqa: BLE001 - reported to the parent as the market's last error
        return "error", f"{type(e).__name__}: {e}"
