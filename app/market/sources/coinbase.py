"""Coinbase Exchange: `GET /products/{id}/trades`, newest first, paged to older by `after`.

The API only pages backwards (`after=<id>` gives older trades), so moving forward
from the cursor means: take the newest page, page back until the cursor's trade is
reached, and hand out the ids above the cursor oldest first.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Any

from app.market.sources.base import HttpSource, Page, symbol_parts
from app.market.ticks import Tick

log = logging.getLogger(__name__)

_ISO = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?$")


def parse_time(s: str) -> float:
    """ISO 8601 -> unix seconds; any number of fraction digits (Coinbase sends 3 to 9)."""
    m = _ISO.match(s.strip())
    if not m:
        raise ValueError(f"not an ISO 8601 time: {s!r}")
    head, frac, tz = m.groups()
    dt = datetime.fromisoformat(head + (tz if tz and tz != "Z" else "+00:00"))
    return dt.timestamp() + (float("0." + frac) if frac else 0.0)


class CoinbaseSource(HttpSource):
    name = "coinbase"
    default_base_url = "https://api.exchange.coinbase.com"
    min_interval_s = 0.1  # ~10 public requests/s per IP

    def __init__(
        self, base_url: str | None = None, *, limit: int = 1000, max_pages: int = 50, **kw: Any
    ) -> None:
        super().__init__(base_url, **kw)
        self.limit = limit
        self.max_pages = max_pages

    def pair(self, symbol: str) -> str:
        base, quote = symbol_parts(symbol, "coinbase")
        return f"{base}-{quote}"

    async def _page(self, path: str, after: int | None) -> list[Tick]:
        params: dict[str, str | int] = {"limit": self.limit}
        if after is not None:
            params["after"] = after
        body = await self.get_json(path, params)
        if not isinstance(body, list):
            raise self.malformed(path, f"expected a JSON array of trades, got {str(body)[:200]}")
        rows: list[Tick] = []
        try:
            for t in body:
                maker = t["side"]
                if maker not in ("buy", "sell"):
                    raise ValueError(f"side must be buy or sell, got {maker!r}")
                rows.append(
                    Tick(
                        parse_time(t["time"]),
                        float(t["price"]),
                        float(t["size"]),
                        str(int(t["trade_id"])),
                        "sell" if maker == "buy" else "buy",
                    )
                )  # taker is the other side
        except (KeyError, TypeError, ValueError) as e:
            raise self.malformed(path, f"bad trade {e!r}") from e
        return rows

    @staticmethod
    def _reached(rows: list[Tick], after_id: int | None, start: float | None) -> bool:
        """Whether this page goes back far enough: to the cursor's next id, or to `start`."""
        if after_id is not None:
            return min(int(t.trade_id) for t in rows) <= after_id + 1  # type: ignore[arg-type]
        return start is None or min(t.time for t in rows) <= start

    async def fetch(self, symbol: str, cursor: str | None, *, start: float | None = None) -> Page:
        path = f"/products/{self.pair(symbol)}/trades"
        after_id = int(cursor) if cursor is not None else None
        rows = await self._page(path, None)
        collected = list(rows)
        pages = 1
        # Page back until the page reaches the cursor (or `start` when there is none).
        while rows and not self._reached(rows, after_id, start):
            if pages >= self.max_pages:
                log.warning(
                    "coinbase: %s: stopped after %d pages before reaching cursor %s / start %s; "
                    "older trades are skipped",
                    symbol,
                    pages,
                    cursor,
                    start,
                )
                break
            oldest = min(int(t.trade_id) for t in rows)  # type: ignore[arg-type]
            rows = await self._page(path, oldest)
            collected.extend(rows)
            pages += 1
        if after_id is not None:
            collected = [t for t in collected if int(t.trade_id) > after_id]  # type: ignore[arg-type]
        elif start is not None:
            collected = [t for t in collected if t.time >= start]
        ticks = self.build_ticks(path, collected)
        if not len(ticks):
            return Page(ticks, cursor, False)
        return Page(ticks, str(max(int(t) for t in ticks.trade_id)), False)  # type: ignore[union-attr]
