"""The one pull loop: a market's pages from its source into a sink, resuming from the sink's cursor.

The scheduler's worker pulls into the tick store (`pull`); the backfill command
(`tickcast fetch`) runs the same loop into the store or a CSV, with a time window
and a page limit. Each page's ticks and the cursor after them are written in one
step by the sink, so a crash or a bad page never moves the cursor past data that
was not kept, and a re-pull of an overlap keeps nothing twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from app.market.sources.base import Source
from app.market.storage import TickStorage
from app.market.ticks import TickArrays
from app.services.ingestion.sinks import StoreSink

log = logging.getLogger(__name__)

# Why a pull ended: the source had nothing more waiting, a tick reached `end`, or `max_pages`.
Stop = Literal["done", "end", "max_pages"]


class Sink(Protocol):
    """Where pulled ticks go, and where the pull resumes."""

    def cursor(self) -> str | None:
        """The cursor after the last page written (None: never pulled)."""
        ...

    async def write(self, ticks: TickArrays, cursor: str | None) -> int:
        """Keep `ticks` and move the cursor to `cursor` together, or neither; returns how many
        ticks were new. `cursor` None keeps the cursor where it is (a page cut at an end time
        is fetched again by the next pull)."""
        ...


@dataclass
class PullProgress:
    """A pull's figures so far, updated page by page: a caller that sees the pull fail still
    knows what was kept before it."""

    pages: int = 0
    new: int = 0
    last_time: float | None = None  # the time of the last tick kept (or found already kept)
    cursor: str | None = None  # the sink's cursor: where the next pull resumes
    stop: Stop = "done"
    t0: float = field(default_factory=time.perf_counter)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0


@dataclass(frozen=True)
class PullResult:
    exchange: str
    symbol: str
    new_ticks: int
    pages: int
    cursor: str | None
    seconds: float


def clip(ticks: TickArrays, since: float | None, end: float | None) -> tuple[TickArrays, bool]:
    """The ticks in [since, end), and whether `end` cut the page."""
    if since is not None and len(ticks) and ticks.time[0] < since:
        ticks = ticks[int(np.searchsorted(ticks.time, since, side="left")) :]
    if end is not None and len(ticks) and ticks.time[-1] >= end:
        return ticks[: int(np.searchsorted(ticks.time, end, side="left"))], True
    return ticks, False


async def pull_pages(
    source: Source,
    sink: Sink,
    symbol: str,
    *,
    start: float | None = None,
    since: float | None = None,
    end: float | None = None,
    max_pages: int | None = None,
    progress: PullProgress | None = None,
    on_page: Callable[[PullProgress], None] | None = None,
) -> PullProgress:
    """Pull pages until the source says nothing more is waiting, a tick reaches `end`, or
    `max_pages` pages were fetched.

    `start` only matters for a market never pulled before: it is where the source
    begins. Ticks before `since` and at or after `end` are not kept. A page cut at
    `end` keeps its ticks before `end` but not its cursor, so nothing at or after
    `end` is skipped for a later pull with a later end. Source errors propagate
    after the pages already written are safe; `progress` (yours, if given) then
    says what they were. `on_page(progress)` is called after each page.
    """
    p = PullProgress() if progress is None else progress
    p.cursor = sink.cursor()
    while max_pages is None or p.pages < max_pages:
        page = await source.fetch(symbol, p.cursor, start=start if p.cursor is None else None)
        p.pages += 1
        ticks, cut = clip(page.ticks, since, end)
        if cut:
            if len(ticks):
                p.new += await sink.write(ticks, None)
        elif page.cursor is not None and (len(page.ticks) or page.cursor != p.cursor):
            p.new += await sink.write(ticks, page.cursor)
            p.cursor = page.cursor
        if len(ticks):
            p.last_time = float(ticks.time[-1])
        if on_page is not None:
            on_page(p)
        if cut or not page.more:
            p.stop = "end" if cut else "done"
            return p
    p.stop = "max_pages"
    return p


async def pull(
    store: TickStorage,
    source: Source,
    exchange: str,
    symbol: str,
    *,
    start: float | None = None,
    max_pages: int = 10_000,
) -> PullResult:
    """The scheduler's pull: the loop into the tick store, every tick the source sends kept.

    The store's inserts run off the event loop (`StoreSink`), so /predict keeps
    answering while a big page lands; the next pull resumes from the last stored page.
    """
    p = await pull_pages(source, StoreSink(store, exchange, symbol), symbol, start=start, max_pages=max_pages)
    log.debug("pulled %s:%s: %d new ticks in %d pages", exchange, symbol, p.new, p.pages)
    return PullResult(exchange, symbol, p.new, p.pages, p.cursor, p.seconds)
