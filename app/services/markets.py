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
from dataclasses import dataclass

from app.market.markets import Market
from app.market.storage import TickStorage
from app.market.ticks import TickArrays, TickError, read_csv
from app.services.predictor import Prediction, Predictor

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


@dataclass(frozen=True)
class KnownMarket:
    exchange: str  # plain names: a store written by other tools may hold any
    symbol: str
    scheduled: bool  # a configured market; False: it only has stored ticks


class Markets:
    def __init__(self, store: TickStorage, predictor: Predictor, configured: list[Market]) -> None:
        self.store, self.predictor = store, predictor
        self.configured = list(dict.fromkeys(configured))  # in their order, each once

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
        return len(ticks), new

    async def predict_latest(self, market: Market, model_id: str | None = None) -> Prediction:
        """The prediction from the market's newest stored ticks, as many as the model needs
        (NotEnoughTicks with fewer, NoTicks with none)."""
        spec = await self.predictor.spec(model_id)
        n = spec.min_ticks
        while True:  # an event model needs min_ticks distinct times: read back until it has them
            ticks = self.store.latest(market.exchange, market.symbol, n, ids=False)
            if len(ticks) == 0:
                raise NoTicks(market)
            if len(ticks) < n or n >= MAX_EVENT_READ * spec.min_ticks or spec.first_full(ticks) < len(ticks):
                return await self.predictor.predict(ticks, model_id)
            n *= 4
