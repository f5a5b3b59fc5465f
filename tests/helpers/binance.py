"""A fake Binance /api/v3/aggTrades over a seeded ground truth, for FakeExchange.

Several suites (the source, the store's pulls, the scheduled ingestion through the app, the
backfill CLI, /metrics) page the same truth, so it is written once here.
"""

from __future__ import annotations

import random
import time
from typing import Any

from app.market.sources.binance import BinanceSource
from app.market.ticks import TickArrays
from tests.helpers.fake_exchange import FakeExchange, Request, Response

T0 = 1634944096633


def truth(n: int, seed: int = 1, gap_ms: int = 700) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out, a, f, t = [], 966492862, 1111480471, T0
    for _ in range(n):
        t += rng.choice([0, 0, gap_ms, 3 * gap_ms])
        k = rng.randint(0, 2)
        out.append(
            {
                "a": a,
                "p": f"{rng.uniform(60000, 61000):.8f}",
                "q": f"{rng.uniform(0.0001, 1):.8f}",
                "f": f,
                "l": f + k,
                "T": t,
                "m": rng.random() < 0.5,
                "M": True,
            }
        )
        a += 1
        f += k + 1
    return out


def recent_trades(n: int) -> list[dict[str, Any]]:
    """`truth(n)` moved to start half an hour ago, so a scheduled pull's first window has it."""
    trades = truth(n)
    shift = int((time.time() - 1800) * 1000) - trades[0]["T"]
    return [{**t, "T": t["T"] + shift} for t in trades]


class BinanceFake:
    """aggTrades paged by fromId or a startTime/endTime window (under an hour), oldest first;
    `messy` adds repeats and swaps two trades, as the real API never promises not to."""

    def __init__(self, trades: list[dict[str, Any]], messy: bool = False) -> None:
        self.trades = trades
        self.messy = messy

    def __call__(self, req: Request) -> Any:
        assert req.path == "/api/v3/aggTrades"
        q = req.query
        if q.get("symbol") != "BTCUSDT":
            return Response.json({"code": -1121, "msg": "Invalid symbol."}, 400)
        limit = int(q.get("limit", 500))
        if "fromId" in q:
            page = [t for t in self.trades if t["a"] >= int(q["fromId"])][:limit]
        elif "startTime" in q:
            lo, hi = int(q["startTime"]), int(q["endTime"])
            assert hi - lo < 3_600_000
            page = [t for t in self.trades if lo <= t["T"] <= hi][:limit]
        else:
            page = self.trades[-limit:]
        if self.messy and len(page) > 2:
            page = page + [page[0], page[len(page) // 2]]  # repeats, and out of order
            page[0], page[1] = page[1], page[0]
        return page


def mk(fx: FakeExchange, **kw: Any) -> BinanceSource:
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("min_interval_s", 0.0)
    kw.setdefault("limit", 10)
    return BinanceSource(fx.url, **kw)


def check(got: TickArrays, trades: list[dict[str, Any]]) -> None:
    assert got.trade_id is not None and got.side is not None
    assert list(got.trade_id) == [str(t["a"]) for t in trades]
    assert got.time.tolist() == [t["T"] / 1000 for t in trades]
    assert got.price.tolist() == [float(t["p"]) for t in trades]
    assert got.amount.tolist() == [float(t["q"]) for t in trades]
    assert list(got.side) == ["sell" if t["m"] else "buy" for t in trades]
