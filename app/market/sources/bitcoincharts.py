"""bitcoincharts history: `GET /v1/trades.csv?symbol=bitstampUSD&start=<unix s>`.

The ancestor's history source. The API answers headerless `unixtime,price,amount`
rows, up to 2000 of them from `start` (inclusive, whole seconds), with no trade ids.
A busy second can hold many trades, and a page can end in the middle of one, so a
plain "last time" cursor would either re-pull (duplicates: nothing to de-duplicate
them by) or skip (losses) the rest of that second. The cursor is therefore
`"<last time>:<trades at that time already returned>"`: the next pull asks from that
second again and skips exactly the trades it already handed out.

Without ids, the store tells a resend from a second identical trade by each trade's
ordinal among identical (time, price, amount) trades of its second. Every answer
starts at the beginning of the second asked for, so the trades are numbered over
whole seconds before the skip, and a trade has the same key whichever page brought
it (a page per second or 2000 rows, a restart in between). Only the very first pull
with neither cursor nor start (the API's latest trades) may begin inside a second;
numbering that partial second from 0 can undercount its repeats, never double them.
"""

from __future__ import annotations

import logging
import math

from app.market.sources.base import HttpSource, Page, SourceError, UnknownSymbol, symbol_parts
from app.market.ticks import Tick

log = logging.getLogger(__name__)

_PATH = "/v1/trades.csv"


def _fmt_time(t: float) -> str:
    """Whole seconds as an int ("1315922016"), the API's own spelling."""
    return str(int(t)) if float(t).is_integer() else repr(float(t))


def parse_cursor(cursor: str) -> tuple[float, int]:
    """ "<time>:<count>" -> (time, count); SourceError when it is not one of ours."""
    try:
        t_s, k_s = cursor.split(":")
        t, k = float(t_s), int(k_s)
    except ValueError:
        t, k = math.nan, -1
    if not math.isfinite(t) or k < 0:
        raise SourceError(
            f"bitcoincharts: cursor {cursor!r} is not '<unix time>:<count>'; reset the market's cursor"
        )
    return t, k


class BitcoinchartsSource(HttpSource):
    """bitcoincharts trades of one exchange's BTC market, paged by (second, count)."""

    name = "bitcoincharts"
    default_base_url = "https://api.bitcoincharts.com"
    min_interval_s = 1.0  # the site asks for no more than about one request per second
    page_size = 2000  # rows per answer; a full page means more is waiting

    def __init__(self, base_url: str | None = None, *, exchange: str = "bitstamp", **kw: object) -> None:
        """`exchange` is the bitcoincharts market prefix ("bitstamp" -> "bitstampUSD")."""
        super().__init__(base_url, **kw)  # type: ignore[arg-type]
        self.exchange = exchange

    def pair(self, symbol: str) -> str:
        """ "BTC-USD" -> "bitstampUSD": bitcoincharts lists bitcoin markets only."""
        base, quote = symbol_parts(symbol)
        if base not in ("BTC", "XBT"):
            raise UnknownSymbol(f"bitcoincharts lists bitcoin markets only, not {symbol!r}; use BTC-<quote>")
        return f"{self.exchange}{quote}"

    async def fetch(self, symbol: str, cursor: str | None, *, start: float | None = None) -> Page:
        """The trades after `cursor`, oldest first, in the server's order within a second,
        each with its ordinal in its second (`TickArrays.ordinal`).

        The order within a second is kept as served (no sort key exists beyond the
        time), since the count in the cursor refers to that order.
        """
        params: dict[str, str | int] = {"symbol": self.pair(symbol)}
        if cursor is None and start is not None:
            if not math.isfinite(start):
                raise ValueError("start must be a finite unix time")
            # Times are whole seconds, so "time >= start" is "time >= ceil(start)".
            cursor = f"{math.ceil(start)}:0"
        t0, skip = parse_cursor(cursor) if cursor is not None else (None, 0)
        if t0 is not None:
            params["start"] = _fmt_time(t0)
        r = await self.get(_PATH, params)
        raw = self._parse(r.content)
        full = len(raw) >= self.page_size
        # Stable sort: out-of-order rows are put in time order, same-second rows keep
        # the server's order, which the count in the cursor relies on.
        raw.sort(key=lambda x: x.time)
        if t0 is not None:
            raw = [x for x in raw if x.time >= t0]  # `start` is inclusive; anything older is noise
        if not raw:
            return Page(self.build_ticks(_PATH, []), cursor, False)
        last_t = raw[-1].time
        at_last = sum(1 for x in raw if x.time == last_t)
        drop = 0
        if t0 is not None and raw[0].time == t0:
            # The first `skip` trades of second t0 were returned before; when the page
            # has fewer than that, nothing at t0 is new.
            drop = min(skip, sum(1 for x in raw if x.time == t0))
        next_cursor = f"{_fmt_time(last_t)}:{at_last}"
        if full and raw[0].time == last_t:
            # A full page inside one second: asking from that second again returns the
            # same page, so the API cannot reach the rest of it. Move on rather than
            # loop forever, and say so.
            log.warning(
                "bitcoincharts: more than %d trades at %s; the API cannot page past them, "
                "the rest of that second is skipped",
                self.page_size,
                _fmt_time(last_t),
            )
            next_cursor = f"{_fmt_time(last_t + 1)}:0"
        # Numbered before the skip: the page holds its seconds from their first trade.
        ticks = self.build_ticks(_PATH, raw).with_ordinals()[drop:]
        return Page(ticks, next_cursor, full)

    def _parse(self, content: bytes) -> list[Tick]:
        """Headerless `unixtime,price,amount` lines; anything else is malformed.

        A body cut mid-line can still parse ("6.0" of "6.05"), so a non-empty body must
        end with a newline, as every complete answer does.
        """
        try:
            text = content.decode("ascii")
        except UnicodeDecodeError as e:
            raise self.malformed(_PATH, f"not ASCII CSV ({e})") from e
        if not text.strip():
            return []
        if not text.endswith("\n"):
            raise self.malformed(_PATH, f"body does not end with a newline (truncated?): ...{text[-60:]!r}")
        rows: list[Tick] = []
        for n, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(",")
            try:
                if len(parts) != 3:
                    raise ValueError(f"expected 3 fields unixtime,price,amount, got {len(parts)}")
                rows.append(Tick(float(parts[0]), float(parts[1]), float(parts[2])))
            except ValueError as e:
                raise self.malformed(_PATH, f"line {n} {line[:80]!r}: {e}") from e
        return rows
