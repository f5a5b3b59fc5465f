"""Coinbase against a fake /products/{id}/trades on 127.0.0.1 (newest first, `after` pages older)."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.market.sources.base import MalformedResponse, SourceError, UnknownSymbol
from app.market.sources.coinbase import CoinbaseSource, parse_time
from app.market.ticks import TickArrays
from tests.helpers.fake_exchange import (
    FakeExchange,
    Request,
    Response,
    hang,
    rate_limited,
    server_error,
    truncated,
)

SAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "exchange_samples"
T0 = 1710327600.0


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def truth(n: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    out, t = [], T0
    for i in range(n):
        t = round(t + rng.choice([0.0, 0.0, 0.25, 1.5]), 6)
        out.append(
            {
                "trade_id": 18502000 + i,
                "side": rng.choice(["buy", "sell"]),
                "size": f"{rng.uniform(0.0001, 1):.8f}",
                "price": f"{rng.uniform(73000, 73500):.8f}",
                "time": iso(t),
            }
        )
    return out


class Market:
    """Trades visible so far; newest first; `after=X` gives ids < X."""

    def __init__(self, trades: list[dict], messy: bool = False) -> None:
        self.trades = trades
        self.visible = len(trades)
        self.messy = messy

    def __call__(self, req: Request):
        if req.path != "/products/BTC-USD/trades":
            return Response.json({"message": "NotFound"}, 404)
        limit = int(req.query.get("limit", 100))
        newest_first = list(reversed(self.trades[: self.visible]))
        if "after" in req.query:
            newest_first = [t for t in newest_first if t["trade_id"] < int(req.query["after"])]
        page = newest_first[:limit]
        if self.messy and len(page) > 2:
            page = [page[1], page[0], *page[2:], page[0]]
        return page


def mk(fx: FakeExchange, **kw) -> CoinbaseSource:
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("min_interval_s", 0.0)
    kw.setdefault("limit", 7)
    return CoinbaseSource(fx.url, **kw)


def check(got: TickArrays, trades: list[dict]) -> None:
    assert list(got.trade_id) == [str(t["trade_id"]) for t in trades]
    assert got.time.tolist() == pytest.approx([parse_time(t["time"]) for t in trades], abs=1e-6)
    assert got.time.tolist() == pytest.approx(
        [round(datetime.fromisoformat(t["time"]).timestamp(), 6) for t in trades], abs=1e-6
    )
    assert got.price.tolist() == [float(t["price"]) for t in trades]
    assert got.amount.tolist() == [float(t["size"]) for t in trades]
    assert list(got.side) == ["sell" if t["side"] == "buy" else "buy" for t in trades]  # taker side


async def poll(
    src: CoinbaseSource,
    market: Market,
    steps: list[int],
    cursor: str | None,
    fx: FakeExchange | None = None,
    faults: dict | None = None,
):
    got, errors = [], []
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
    return TickArrays.concat(got), errors, cursor


def test_pair() -> None:
    src = CoinbaseSource("http://127.0.0.1:9")
    assert src.pair("btcusd") == "BTC-USD" and src.pair("ETH/EUR") == "ETH-EUR"
    with pytest.raises(UnknownSymbol):
        src.pair("BTC-USD-X")
    asyncio.run(src.aclose())


def test_parse_time() -> None:
    assert parse_time("2020-03-20T00:36:59.860Z") == pytest.approx(1584664619.86)
    assert parse_time("2024-03-13T11:00:17.710679123Z") == pytest.approx(1710327617.710679123)
    assert parse_time("2024-03-13T11:00:17+00:00") == 1710327617.0
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_paging_back_to_cursor_reproduces_truth() -> None:
    trades = truth(60)
    market = Market(trades, messy=True)
    with FakeExchange(market) as fx:

        async def go():
            async with mk(fx) as src:
                return await poll(src, market, [3, 3, 30, 31, 60], str(trades[0]["trade_id"] - 1))

        got, errors, cursor = asyncio.run(go())
        afters = [r.query.get("after") for r in fx.requests]
    assert not errors
    assert cursor == str(trades[-1]["trade_id"])
    assert afters.count(None) == 5 and len(afters) > 5  # paged back within pulls
    check(got, trades)


def test_faults_then_recovery() -> None:
    trades = truth(40, seed=2)
    market = Market(trades)
    with FakeExchange(market) as fx:
        faults = {
            0: [rate_limited(0.2)],
            1: [server_error(), server_error(504)],
            2: [hang(1.0)],
            3: [truncated()],
            4: [Response(200, b"", {"Content-Type": "application/json"})],
        }

        async def go():
            async with mk(fx, timeout=0.3) as src:
                first = str(trades[0]["trade_id"] - 1)
                return await poll(src, market, [5, 12, 20, 30, 33, 40], first, fx, faults)

        got, errors, cursor = asyncio.run(go())
    assert [type(e) for e in errors] == [MalformedResponse, MalformedResponse]
    check(got, trades)


def test_no_cursor_newest_page_and_start() -> None:
    trades = truth(30, seed=3)
    with FakeExchange(Market(trades)) as fx:

        async def go():
            async with mk(fx) as src:
                newest = await src.fetch("BTC-USD", None)
                start = parse_time(trades[4]["time"])
                since = await src.fetch("BTC-USD", None, start=start)
                return newest, since, start

        newest, since, start = asyncio.run(go())
    check(newest.ticks, trades[-7:])
    assert newest.cursor == str(trades[-1]["trade_id"]) and newest.more is False
    check(since.ticks, [t for t in trades if parse_time(t["time"]) >= start])


def test_empty_and_bounded_page_back() -> None:
    trades = truth(40, seed=4)
    market = Market(trades)
    with FakeExchange(market) as fx:

        async def go():
            async with mk(fx, max_pages=2) as src:
                market.visible = 0
                empty = await src.fetch("BTC-USD", "5")
                market.visible = 40
                far = await src.fetch("BTC-USD", str(trades[0]["trade_id"]))
                return empty, far

        empty, far = asyncio.run(go())
    assert len(empty.ticks) == 0 and empty.cursor == "5" and not empty.more
    check(far.ticks, trades[-14:])  # two pages at most; the rest is beyond the bound


def test_unknown_product_404() -> None:
    with FakeExchange(Market([])) as fx:

        async def go():
            async with mk(fx) as src:
                await src.fetch("BTC-XYZ", None)

        with pytest.raises(SourceError, match="check the symbol"):
            asyncio.run(go())


@pytest.mark.parametrize(
    "body",
    [
        {"message": "x"},
        [{"trade_id": 1}],
        [{"trade_id": 1, "side": "up", "size": "1", "price": "1", "time": iso(T0)}],
        [{"trade_id": 1, "side": "buy", "size": "1", "price": "1", "time": "never"}],
    ],
)
def test_wrong_shape_is_malformed(body) -> None:
    with FakeExchange(lambda r: body) as fx:

        async def go():
            async with mk(fx) as src:
                await src.fetch("BTC-USD", None)

        with pytest.raises(MalformedResponse):
            asyncio.run(go())


@pytest.mark.parametrize("name", ["coinbase.json", "coinbase_docs_example.json"])
@pytest.mark.real_data
def test_real_sample_shape(name: str) -> None:
    path = SAMPLES / name
    if not path.exists():
        pytest.skip("exchange samples not present")
    body = json.loads(path.read_text())
    with FakeExchange(lambda r: body) as fx:

        async def go():
            async with mk(fx, limit=1000) as src:
                return await src.fetch("BTC-USD", None)

        page = asyncio.run(go())
    assert len(page.ticks) == len({str(t["trade_id"]) for t in body}) > 0
    assert page.cursor == str(max(int(t["trade_id"]) for t in body))
