"""Bitstamp: `GET /api/v2/transactions/{pair}/?time=day`.

Bitstamp offers no paging, only the trades of the last minute/hour/day, newest
first. The cursor is the last trade id stored; each poll keeps only newer ids, so
polls that overlap (they always do) store nothing twice.
"""

from __future__ import annotations

from typing import Any

from app.market.sources.base import HttpSource, Page, SourceError, symbol_parts
from app.market.ticks import Tick


class BitstampSource(HttpSource):
    name = "bitstamp"
    default_base_url = "https://www.bitstamp.net"
    min_interval_s = 1.0  # 8000 requests / 10 min allowed; one a second is ample for polling

    def __init__(self, base_url: str | None = None, *, window: str = "day", **kw: Any) -> None:
        super().__init__(base_url, **kw)
        if window not in ("minute", "hour", "day"):
            raise ValueError(f"bitstamp window must be minute, hour or day, got {window!r}")
        self.window = window

    def pair(self, symbol: str) -> str:
        base, quote = symbol_parts(symbol, "bitstamp")
        return (base + quote).lower()

    async def fetch(self, symbol: str, cursor: str | None, *, start: float | None = None) -> Page:
        path = f"/api/v2/transactions/{self.pair(symbol)}/"
        body = await self.get_json(path, {"time": self.window})
        if isinstance(body, dict) and ("reason" in body or body.get("status") == "error"):
            raise SourceError(f"bitstamp: GET {path} answered an error: {body}; check the symbol")
        if not isinstance(body, list):
            raise self.malformed(path, f"expected a JSON array of trades, got {type(body).__name__}")
        after = _tid(cursor) if cursor is not None else None
        rows: list[Tick] = []
        try:
            for t in body:
                tid = int(t["tid"])
                if after is not None and tid <= after:
                    continue
                time_ = float(t["date"])
                if after is None and start is not None and time_ < start:
                    continue
                kind = str(t["type"])
                if kind not in ("0", "1"):
                    raise ValueError(f"type must be 0 or 1, got {kind!r}")
                rows.append(
                    Tick(
                        time_,
                        float(t["price"]),
                        float(t["amount"]),
                        str(tid),
                        "buy" if kind == "0" else "sell",
                    )
                )
        except (KeyError, TypeError, ValueError) as e:
            raise self.malformed(path, f"bad trade {e!r}") from e
        ticks = self.build_ticks(path, rows)
        if not len(ticks):
            return Page(ticks, cursor, False)
        new_cursor = str(max(int(t) for t in ticks.trade_id))  # type: ignore[union-attr]
        return Page(ticks, new_cursor, False)


def _tid(cursor: str) -> int:
    try:
        return int(cursor)
    except ValueError as e:
        raise ValueError(f"bitstamp cursor must be a trade id, got {cursor!r}") from e
