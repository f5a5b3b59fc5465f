"""What the API asks about markets: which ones exist, their stored ticks, CSV imports, and a
prediction from a market's latest ticks.

The routes ask here rather than reading the tick store, so that the answer to "is this a
market?" and "which markets are there?" is given in one place: the configured markets
(`Settings.markets`) first, in their order, then every other market the store holds
(imported, or configured once).
"""

from __future__ import annotations

import asyncio
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.market.markets import Market
from app.market.storage import TickStorage
from app.market.ticks import TickArrays, TickError, read_csv
from app.services.predictor import Freshness, Prediction, Predictor

# An event model reads back up to this many times its window in ticks to find min_ticks
# distinct timestamps (Binance sends dozens of fills per taker order at times).
MAX_EVENT_READ = 64


class NotAMarket(LookupError):
    """Neither configured nor with stored ticks: nothing to show or stream. Configuring it, or
    importing its ticks, makes it one."""

    def __init__(self, market: Market) -> None:
        super().__init__(f"{market} is neither a configured market nor has stored ticks")
        self.market = market


class NoTicks(LookupError):
    """A market with no stored ticks, asked for a prediction from them."""

    def __init__(self, market: Market) -> None:
        super().__init__(f"no ticks stored for {market}; configure the market or import ticks")


class BadCsv(ValueError):
    """A CSV import that cannot be stored; nothing of it was. `row` is the file's line, if one
    is to blame."""

    def __init__(self, cause: TickError) -> None:
        super().__init__(f"CSV {cause}; nothing was stored")
        self.row = cause.row


class StaleMarket(Exception):
    """The market's newest stored tick is older than its staleness limit allows: a prediction
    from it would describe a market that has moved on. Fresh ticks (the next pull, an import)
    end it; `retry_after_s` is when the next pull is due."""

    def __init__(self, market: Market, age_s: float, limit_s: float, retry_after_s: int) -> None:
        super().__init__(
            f"the newest stored tick of {market} is {age_s:.0f} s old, over the {limit_s:g} s allowed"
        )
        self.market, self.age_s, self.limit_s, self.retry_after_s = market, age_s, limit_s, retry_after_s


@dataclass(frozen=True)
class LatestPrediction:
    """A prediction from a market's stored ticks, with how current they were."""

    prediction: Prediction
    freshness: Freshness


@dataclass(frozen=True)
class KnownMarket:
    exchange: str  # plain names: a store written by other tools may hold any
    symbol: str
    scheduled: bool  # a configured market; False: it only has stored ticks


class Markets:
    def __init__(
        self,
        store: TickStorage,
        predictor: Predictor,
        configured: list[Market],
        *,
        staleness_limit: Callable[[str, str], float | None] | None = None,
        ingestion_lag: Callable[[str, str], float | None] | None = None,
        stale_retry_s: float = 5.0,
        on_stored: Callable[[str, str], None] | None = None,
    ) -> None:
        """`staleness_limit(exchange, symbol)`: the oldest a market's newest tick may be for a
        prediction from it (None: any age); `ingestion_lag(exchange, symbol)`: how long its newest
        pulled tick took to be stored (None: not ingested here); `stale_retry_s`: the pull
        interval, when a stale market may be asked again; `on_stored`: an import stored new ticks."""
        self.store, self.predictor = store, predictor
        self.configured = list(dict.fromkeys(configured))  # in their order, each once
        self.staleness_limit, self.ingestion_lag = staleness_limit, ingestion_lag
        self.stale_retry_s = max(1, math.ceil(stale_retry_s))
        self.on_stored = on_stored

    def known(self) -> list[KnownMarket]:
        """The configured markets, then the other stored ones (blocks on the store)."""
        ours = {(m.exchange, m.symbol) for m in self.configured}
        others = [KnownMarket(e, s, False) for e, s in self.store.markets() if (e, s) not in ours]
        return [KnownMarket(m.exchange, m.symbol, True) for m in self.configured] + others

    def require(self, market: Market) -> None:
        """NotAMarket unless the market is configured or has stored ticks."""
        if market not in self.configured and self.store.time_range(market.exchange, market.symbol) is None:
            raise NotAMarket(market)

    def ticks(
        self, market: Market, *, start: float | None, end: float | None, limit: int, ids: bool
    ) -> TickArrays:
        """Stored ticks with start <= time < end, the first `limit` (none for an unknown market)."""
        return self.store.read(market.exchange, market.symbol, start=start, end=end, limit=limit, ids=ids)

    def latest(self, market: Market, n: int, *, ids: bool) -> TickArrays:
        """The newest n stored ticks, oldest first."""
        return self.store.latest(market.exchange, market.symbol, n, ids=ids)

    async def import_csv(self, market: Market, text: str) -> tuple[int, int]:
        """Store a CSV's ticks, rows told apart as `TickArrays.with_ordinals` says; (rows, new
        ticks). The whole file is checked first: BadCsv stores nothing."""
        try:
            ticks = read_csv(io.StringIO(text)).with_ordinals()
        except TickError as e:
            raise BadCsv(e) from e
        # off the event loop, which /predict must not wait on
        new = await asyncio.to_thread(self.store.insert, market.exchange, market.symbol, ticks)
        if new and self.on_stored is not None:  # streams and live scoring look now, not at their next poll
            self.on_stored(market.exchange, market.symbol)
        return len(ticks), new

    async def predict_latest(self, market: Market, model_id: str | None = None) -> LatestPrediction:
        """The prediction from the market's newest stored ticks, as many as the model needs
        (NotEnoughTicks with fewer, NoTicks with none, StaleMarket when the newest is older than
        the market's limit), with how current they are."""
        spec = await self.predictor.spec(model_id)
        n = spec.min_ticks
        while True:  # an event model needs min_ticks distinct times: read back until it has them
            ticks = self.store.latest(market.exchange, market.symbol, n, ids=False)
            if len(ticks) == 0:
                raise NoTicks(market)
            if len(ticks) < n or n >= MAX_EVENT_READ * spec.min_ticks or spec.first_full(ticks) < len(ticks):
                break
            n *= 4
        freshness = self.freshness(market, float(ticks.time[-1]))
        return LatestPrediction(await self.predictor.predict(ticks, model_id), freshness)

    def freshness(self, market: Market, newest: float) -> Freshness:
        """How current a market is whose newest stored tick is at `newest`; StaleMarket when that
        is older than the market's limit."""
        age = time.time() - newest
        limit = None if self.staleness_limit is None else self.staleness_limit(market.exchange, market.symbol)
        if limit is not None and age > limit:
            raise StaleMarket(market, age, limit, self.stale_retry_s)
        lag = None if self.ingestion_lag is None else self.ingestion_lag(market.exchange, market.symbol)
        return Freshness(age, lag)
