"""The synthetic market as a live source: ticks up to "now", as an exchange would have.

A fresh install (and every test of the ingestion loop) needs a feed that behaves
like an exchange without a network: each pull returns the trades that "happened"
since the previous one. The market is opened `history_s` before now so the first
pull brings a history to train on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from app.market.sources.base import Page, SourceError, canonical_symbol
from app.market.sources.synthetic import DEFAULT_START_PRICE, SyntheticMarket, SyntheticParams
from app.market.ticks import TickArrays


class SyntheticSource:
    """A seeded `SyntheticMarket` read up to the clock; the cursor counts ticks handed out.

    Trade ids are the ticks' ordinal numbers, so the count is also the next id. Given a
    cursor larger than what this instance handed out (a restart), it skips that many
    ticks first, so ids continue instead of restarting at 0 and colliding in the store.
    """

    name = "synthetic"

    def __init__(
        self,
        seed: int = 0,
        history_s: float = 3600.0,
        *,
        clock: Callable[[], float] = time.time,
        start_price: float = DEFAULT_START_PRICE,
        params: SyntheticParams | None = None,
    ) -> None:
        if not (math.isfinite(history_s) and history_s >= 0):
            raise ValueError("history_s must be >= 0")
        self.clock = clock
        self.seed = seed
        self.market = SyntheticMarket(seed, start_time=clock() - history_s,
                                      start_price=start_price, params=params)
        self.count = 0  # ticks handed out (or skipped to honour a cursor)

    def pair(self, symbol: str) -> str:
        """Any well-formed symbol: the synthetic market trades whatever it is called."""
        return canonical_symbol(symbol)

    async def fetch(self, symbol: str, cursor: str | None, *, start: float | None = None) -> Page:
        """The ticks since the last fetch up to now (the first fetch: since `start`, if given)."""
        self.pair(symbol)
        now = self.clock()
        target = 0
        if cursor is not None:
            if not cursor.isdigit():
                raise SourceError(f"synthetic: cursor {cursor!r} is not a tick count; reset the cursor")
            target = int(cursor)
        elif start is not None and self.count == 0:
            if not math.isfinite(start):
                raise ValueError("start must be a finite unix time")
            # Drop the ticks before `start` (the market keeps time order).
            self.count += len(self.market.ticks_until(float(np.nextafter(start, -math.inf))))
        ticks: TickArrays = self.market.ticks_until(now)
        behind = target - self.count
        if behind > 0:
            # Resuming after a restart: skip what the cursor says was handed out already
            # (over several fetches if the clock has not produced that many yet).
            drop = min(behind, len(ticks))
            self.count += drop
            ticks = ticks[drop:]
        self.count += len(ticks)
        return Page(ticks, str(max(self.count, target)), False)

    async def aclose(self) -> None:
        """Nothing to release."""
