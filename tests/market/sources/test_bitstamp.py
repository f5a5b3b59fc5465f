"""Bitstamp against a fake /api/v2/transactions/{pair}/ on 127.0.0.1 (newest first, no paging)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

import pytest

from app.market.sources.base import MalformedResponse, SourceError, UnknownSymbol
from app.market.sources.bitstamp import BitstampSource
from app.market.ticks import TickArrays
from tests.helpers.fake_exchange import FakeExchange, Request, hang, rate_limited, server_error, truncated

SAMPLE = Path(__file__).resolve().parents[3].parent / "shared" / "exchange_samples" / "bitstamp.json"


def truth(n: int, seed: int = 1) -> list[dict]:
    """Trades as Bitstamp sends them: string fields, tids increasing with gaps, tied times."""
    rng = random.Random(seed)
    out, tid, t = [], 326595000, 1710327000
    for _ in range(n):
        tid += rng.randint(1, 7)
        t += rng.choice([0, 0, 1, 2])
        out.append(
            {
                "amount": f"{rng.uniform(0.0001, 2):.8f}",
                "date": str(t),
                "price": str(rng.randint(73000, 73500)),
                "tid": str(tid),
                "type": str(rng.randint(0, 1)),
            }
        )
    return out


class Market:
    """Server state: the trades visible so far; served newest first, optionally shuffled with repeats."""

    def __init__(self, trades: list[dict], messy: bool = False) -> None:
        self.trades = trades
        self.visible = 0
        self.messy = messy

    def __call__(self, req: Request):
        assert req.path == "/api/v2/transactions/btcusd/", req.path
        assert req.query == {"time": "day"}
        page = list(reversed(self.trades[: self.visible]))
        if self.messy and page:
            page = page + page[: len(page) // 3]
            random.Random(len(page)).shuffle(page)
        return page


def mk(fx: FakeExchange, **kw) -> BitstampSource:
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("min_interval_s", 0.0)
    return BitstampSource(fx.url, **kw)


def check(got: TickArrays, trades: list[dict]) -> None:
    assert list(got.trade_id) == [t["tid"] for t in trades]
    assert got.time.tolist() == [float(t["date"]) for t in trades]
    assert got.price.tolist() == [float(t["price"]) for t in trades]
    assert got.amount.tolist() == [float(t["amount"]) for t in trades]
    assert list(got.side) == ["buy" if t["type"] == "0" else "sell" for t in trades]


async def poll(
    src: BitstampSource,
    market: Market,
    steps: list[int],
    fx: FakeExchange | None = None,
    faults: dict | None = None,
) -> tuple[TickArrays, list]:
    """Reveal trades step by step, pull after each; failed pulls keep the cursor."""
    got, cursor, errors = [], None, []
    for i, visible in enumerate(steps):
        market.visible = visible
        if faults and i in faults:
            fx.inject(*faults[i])
        try:
            page = await src.fetch("BTC-USD", cursor)
        except SourceError as e:
            errors.append(e)
            continue
        assert page.more is False
        got.append(page.ticks)
        cursor = page.cursor
    return TickArrays.concat(got), errors


def test_pair() -> None:
    src = BitstampSource("http://127.0.0.1:9")
    assert src.pair("BTC-USD") == "btcusd" and src.pair("eth/eur") == "etheur"
    with pytest.raises(UnknownSymbol):
        src.pair("bitcoin")
    asyncio.run(src.aclose())


def test_polls_reproduce_truth_messy() -> None:
    trades = truth(60)
    market = Market(trades, messy=True)
    with FakeExchange(market) as fx:

        async def go():
            async with mk(fx) as src:
                return await poll(src, market, [0, 7, 7, 25, 40, 60, 60])

        got, errors = asyncio.run(go())
    assert not errors
    check(got, trades)


def test_faults_then_recovery() -> None:
    trades = truth(50, seed=2)
    market = Market(trades)
    with FakeExchange(market) as fx:
        faults = {
            1: [rate_limited(0.2)],
            2: [server_error(), server_error(503)],
            3: [hang(1.0)],
            4: [truncated()],  # -> MalformedResponse, cursor stays
            5: [truncated(0.9)],
        }

        async def go():
            async with mk(fx, timeout=0.3) as src:
                t = time.monotonic()
                res = await poll(src, market, [5, 10, 20, 30, 35, 40, 50], fx, faults)
                return res, time.monotonic() - t

        (got, errors), elapsed = asyncio.run(go())
    assert [type(e) for e in errors] == [MalformedResponse, MalformedResponse]
    assert elapsed >= 0.2 + 0.3  # Retry-After waited, the hung request timed out
    check(got, trades)


def test_empty_and_start() -> None:
    trades = truth(20, seed=3)
    market = Market(trades)
    with FakeExchange(market) as fx:

        async def go():
            async with mk(fx) as src:
                market.visible = 0
                empty = await src.fetch("btcusd", None)
                market.visible = 20
                cut = float(trades[10]["date"])
                page = await src.fetch("BTC-USD", None, start=cut)
                again = await src.fetch("BTC-USD", page.cursor)
                return empty, page, again

        empty, page, again = asyncio.run(go())
    assert len(empty.ticks) == 0 and empty.cursor is None and not empty.more
    assert page.ticks.time.min() >= float(trades[10]["date"])
    assert page.cursor == trades[-1]["tid"]
    assert len(again.ticks) == 0 and again.cursor == page.cursor


@pytest.mark.parametrize(
    "body",
    [
        {"trades": []},
        [{"tid": "1"}],
        [{"date": "x", "tid": "1", "price": "1", "amount": "1", "type": "0"}],
        [{"date": "1", "tid": "1", "price": "0", "amount": "1", "type": "0"}],
        [{"date": "1", "tid": "1", "price": "1", "amount": "1", "type": "2"}],
    ],
)
def test_wrong_shape_is_malformed(body) -> None:
    with FakeExchange(lambda r: body) as fx:

        async def go():
            async with mk(fx) as src:
                await src.fetch("BTC-USD", "0")

        with pytest.raises(MalformedResponse):
            asyncio.run(go())


@pytest.mark.real_data
def test_real_sample_shape() -> None:
    if not SAMPLE.exists():
        pytest.skip("exchange samples not present")
    body = json.loads(SAMPLE.read_text())
    with FakeExchange(lambda r: body) as fx:

        async def go():
            async with mk(fx) as src:
                return await src.fetch("BTC-USD", None)

        page = asyncio.run(go())
    assert len(page.ticks) == len({t["tid"] for t in body}) > 0
    assert page.cursor == str(max(int(t["tid"]) for t in body))
