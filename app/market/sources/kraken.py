"""Kraken public trades: `GET /0/public/Trades?pair=XBTUSD&since=<last>`.

Kraken pages forward by an opaque nanosecond cursor (`result["last"]`), which makes
it the simplest exchange to ingest without gaps: the cursor we hand back is exactly
the one Kraken gave us, and we only hand it back with a fully parsed page.

Kraken reports most failures as HTTP 200 with a non-empty `"error"` list rather
than a status code, so the generic retry loop in `HttpSource.get` never sees them;
the rate-limit error is retried here with the same backoff.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from app.market.sources.base import (
    HttpSource,
    Page,
    RateLimited,
    SourceError,
    UnknownSymbol,
    symbol_parts,
)
from app.market.ticks import Tick

log = logging.getLogger(__name__)

_PATH = "/0/public/Trades"
# Kraken spells bitcoin XBT (and Dogecoin XDG); everything else keeps its ticker.
_ASSETS = {"BTC": "XBT", "DOGE": "XDG"}
_RATE_LIMIT_ERRORS = ("EGeneral:Too many requests", "EAPI:Rate limit exceeded")
_UNKNOWN_PAIR_ERRORS = ("EQuery:Unknown asset pair",)


class KrakenSource(HttpSource):
    """Kraken trades for one pair, paged by the `since`/`last` nanosecond cursor."""

    name = "kraken"
    default_base_url = "https://api.kraken.com"
    min_interval_s = 1.0  # public endpoints: about one call per second per IP
    page_size = 1000  # Kraken's fixed page; a full page means more is waiting

    def pair(self, symbol: str) -> str:
        """ "BTC-USD" -> "XBTUSD" (Kraken accepts the short altname in requests)."""
        base, quote = symbol_parts(symbol)
        return _ASSETS.get(base, base) + _ASSETS.get(quote, quote)

    async def fetch(self, symbol: str, cursor: str | None, *, start: float | None = None) -> Page:
        """The trades after `cursor` (Kraken's `last`), oldest first.

        With no cursor, `start` (unix s) becomes `since` in nanoseconds; with neither,
        Kraken answers with its most recent trades.
        """
        pair = self.pair(symbol)
        params: dict[str, str | int] = {"pair": pair}
        if cursor is not None:
            if not cursor.isdigit():
                raise SourceError(
                    f"kraken: cursor {cursor!r} is not Kraken's `last` (digits); reset the cursor"
                )
            params["since"] = cursor
        elif start is not None:
            if not math.isfinite(start):
                raise ValueError("start must be a finite unix time")
            params["since"] = str(max(0, int(start * 1e9)))
        body = await self._get_result(pair, params)
        rows, last = self._parse(body)
        ticks = self.build_ticks(_PATH, rows)
        return Page(ticks, last, len(rows) >= self.page_size)

    async def _get_result(self, pair: str, params: dict[str, str | int]) -> Any:
        """GET with Kraken's in-body errors handled: rate limits retried, the rest raised."""
        attempt = 0
        while True:
            body = await self.get_json(_PATH, params)
            errors = body.get("error") if isinstance(body, dict) else None
            if not isinstance(errors, list):
                raise self.malformed(
                    _PATH, f"expected an object with an 'error' list, got {str(body)[:120]!r}"
                )
            if not errors:
                return body
            text = "; ".join(str(e) for e in errors)
            if any(str(e).startswith(_RATE_LIMIT_ERRORS) for e in errors):
                if attempt >= self.retries:
                    wait = self.max_backoff_s
                    raise RateLimited(
                        f"kraken: GET {_PATH} is rate limited ({text}) after {attempt + 1} attempts; "
                        f"wait {wait:g} s or pull less often",
                        wait,
                    )
                delay = self._backoff(attempt)
                log.warning("kraken: GET %s: %s, retrying in %.2f s", _PATH, text, delay)
                await asyncio.sleep(delay)
                attempt += 1
                continue
            if any(str(e).startswith(_UNKNOWN_PAIR_ERRORS) for e in errors):
                raise UnknownSymbol(f"kraken does not list pair {pair!r} ({text}); check the symbol")
            raise SourceError(f"kraken: GET {_PATH} answered with error {text}; the next pull will retry")

    def _parse(self, body: dict[str, Any]) -> tuple[list[Tick], str]:
        """Rows `[price, volume, time, "b"/"s", "m"/"l", misc, trade_id]` -> ticks, and `last`.

        The result is keyed by Kraken's own pair name (XXBTZUSD for XBTUSD), so take
        whichever key is not "last". Older responses have no trade id (6 fields).
        """
        result = body.get("result")
        if not isinstance(result, dict):
            raise self.malformed(_PATH, "no 'result' object")
        last = result.get("last")
        if isinstance(last, int) and not isinstance(last, bool):
            last = str(last)
        if not isinstance(last, str) or not last.isdigit():
            raise self.malformed(_PATH, f"'last' is not a nanosecond cursor: {last!r}")
        keys = [k for k in result if k != "last"]
        if len(keys) > 1:
            raise self.malformed(_PATH, f"expected trades for one pair, got {keys}")
        raw = result[keys[0]] if keys else []
        if not isinstance(raw, list):
            raise self.malformed(_PATH, f"trades for {keys[0]!r} are not a list")
        rows: list[Tick] = []
        for i, r in enumerate(raw):
            try:
                if not isinstance(r, list) or len(r) < 4:
                    raise ValueError("expected [price, volume, time, side, ...]")
                side = {"b": "buy", "s": "sell"}.get(r[3])
                if side is None:
                    raise ValueError(f"side {r[3]!r} is not 'b' or 's'")
                trade_id = str(r[6]) if len(r) > 6 and r[6] is not None else None
                rows.append(Tick(float(r[2]), float(r[0]), float(r[1]), trade_id, side))
            except (TypeError, ValueError) as e:
                raise self.malformed(_PATH, f"trade {i} {str(r)[:120]}: {e}") from e
        return rows, last
