"""Pull one market from its source into the store, resuming from the saved cursor.

Each page's ticks and the cursor after them commit in one transaction, so a
crash or a bad page never moves the cursor past data that was not stored, and
a re-pull of an overlap stores nothing twice (the store is idempotent).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.market.sources.base import Source
from app.market.store import TickStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PullResult:
    exchange: str
    symbol: str
    new_ticks: int
    pages: int
    cursor: str | None
    seconds: float


async def pull(
    store: TickStore,
    source: Source,
    exchange: str,
    symbol: str,
    *,
    start: float | None = None,
    max_pages: int = 10_000,
    progress: Callable[[int, int], None] | None = None,
) -> PullResult:
    """Pull pages until the source says nothing more is waiting (or `max_pages`).

    `start` only matters for a market never pulled before. Source errors
    propagate after the pages already stored are safe; the next pull resumes
    from the last stored page. `progress(pages, new_ticks)` is called per page.
    """
    t0 = time.perf_counter()
    cursor = store.cursor(exchange, symbol)
    new = pages = 0
    while pages < max_pages:
        page = await source.fetch(symbol, cursor, start=start if cursor is None else None)
        pages += 1
        if page.cursor is not None and (len(page.ticks) or page.cursor != cursor):
            # SQLite work off the event loop: /predict keeps answering while a big page lands
            new += await asyncio.to_thread(store.insert, exchange, symbol, page.ticks, cursor=page.cursor)
            cursor = page.cursor
        if progress is not None:
            progress(pages, new)
        if not page.more:
            break
    result = PullResult(exchange, symbol, new, pages, cursor, time.perf_counter() - t0)
    log.debug("pulled %s:%s: %d new ticks in %d pages", exchange, symbol, new, pages)
    return result
