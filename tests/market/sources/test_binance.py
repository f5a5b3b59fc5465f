"""Binance against a fake /api/v3/aggTrades on 127.0.0.1 (oldest first, fromId / startTime paging)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from app.market.sources.base import MalformedResponse, SourceError, UnknownSymbol
from app.market.sources.binance import BinanceSource
from app.market.ticks import TickArrays
from tests.helpers.binance import T0, check, mk, truth
from tests.helpers.binance import BinanceFake as Market
from tests.helpers.fake_exchange import FakeExchange, empty_page, hang, rate_limited, server_error, truncated

SAMPLE = Path(__file__).resolve().parents[3].parent / "shared" / "exchange_samples" / "binance_aggTrades.json"


async def drain(
    src: BinanceSource,
    cursor: str | None,
    start: float | None = None,
    fx: FakeExchange | None = None,
    faults: dict | None = None,
    max_pulls: int = 100,
):
    got, errors, pages = [], [], []
    for i in range(max_pulls):
        if faults and i in faults:
            fx.inject(*faults[i])
        try:
            page = await src.fetch("BTC-USD", cursor, start=start)
        except SourceError as e:
            errors.append(e)
            continue
        pages.append(page)
        got.append(page.ticks)
        if page.cursor is not None:
            cursor = page.cursor
        if not page.more:
            break
    return TickArrays.concat(got), errors, pages, cursor


def test_pair() -> None:
    src = BinanceSource("http://127.0.0.1:9")
    assert src.pair("BTC-USD") == "BTCUSDT" and src.pair("eth/btc") == "ETHBTC"
    with pytest.raises(UnknownSymbol):
        src.pair("BTC")
    asyncio.run(src.aclose())


def test_paging_by_cursor_reproduces_truth() -> None:
    trades = truth(47)
    with FakeExchange(Market(trades, messy=True)) as fx:

        async def go():
            async with mk(fx) as src:
                return await drain(src, str(trades[0]["a"] - 1))

        got, errors, pages, cursor = asyncio.run(go())
        assert [r.query["fromId"] for r in fx.requests] == [str(trades[0]["a"] + 10 * i) for i in range(5)]
    assert not errors
    assert [p.more for p in pages] == [True] * 4 + [False]
    assert cursor == str(trades[-1]["a"])
    check(got, trades)


def test_faults_then_recovery() -> None:
    trades = truth(45, seed=2)
    with FakeExchange(Market(trades)) as fx:
        faults = {
            0: [rate_limited(0.2)],
            1: [server_error(), server_error(502)],
            2: [hang(1.0)],
            3: [truncated()],
            5: [truncated(0.95)],
        }

        async def go():
            async with mk(fx, timeout=0.3) as src:
                return await drain(src, str(trades[0]["a"] - 1), fx=fx, faults=faults)

        got, errors, pages, cursor = asyncio.run(go())
        malformed_from = [r.query["fromId"] for r in fx.requests]
    assert [type(e) for e in errors] == [MalformedResponse, MalformedResponse]
    # the malformed pulls were asked again with the same fromId (cursor not advanced)
    # retries: 1 after the 429, 2 after the 5xx, 1 after the timeout, 2 re-pulls after malformed bodies
    assert len(malformed_from) == len(set(malformed_from)) + 1 + 2 + 1 + 2
    check(got, trades)


def test_start_window_and_latest() -> None:
    trades = truth(25, seed=3)
    with FakeExchange(Market(trades)) as fx:

        async def go():
            async with mk(fx) as src:
                start = trades[5]["T"] / 1000
                got, errors, pages, cursor = await drain(src, None, start=start)
                latest = await src.fetch("BTC-USD", None)
                return got, pages, latest

        got, pages, latest = asyncio.run(go())
        first = fx.requests[0].query
    assert first["startTime"] == str(trades[5]["T"])
    assert int(first["endTime"]) - int(first["startTime"]) == 3599999
    assert "fromId" in fx.requests[1].query
    lo = next(i for i, t in enumerate(trades) if t["T"] >= trades[5]["T"])
    check(got, trades[lo:])
    check(latest.ticks, trades[-10:])
    assert latest.more is True


def test_empty_hours_are_skipped() -> None:
    trades = truth(5, seed=4)
    for t in trades:
        t["T"] += 3 * 3_600_000  # three empty hours after `start`
    with FakeExchange(Market(trades)) as fx:

        async def go():
            async with mk(fx) as src:
                return await drain(src, None, start=T0 / 1000)

        got, errors, pages, cursor = asyncio.run(go())
    assert [len(p.ticks) for p in pages][:3] == [0, 0, 0]
    assert pages[0].cursor.startswith("t:") and pages[0].more
    check(got, trades)


def test_empty_page_keeps_cursor() -> None:
    with FakeExchange(lambda r: []) as fx:
        fx.inject(empty_page())

        async def go():
            async with mk(fx) as src:
                return await src.fetch("BTC-USD", "123")

        page = asyncio.run(go())
    assert len(page.ticks) == 0 and page.cursor == "123" and page.more is False


def test_bad_symbol_400() -> None:
    with FakeExchange(Market([])) as fx:

        async def go():
            async with mk(fx) as src:
                await src.fetch("BTC-XYZ", None)

        with pytest.raises(SourceError, match="check the symbol"):
            asyncio.run(go())


@pytest.mark.parametrize("body", [{"code": 0}, [{"a": 1}], [{"a": 1, "p": "1", "q": "1", "T": 1, "m": "no"}]])
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
            async with mk(fx, limit=1000) as src:
                return await src.fetch("BTC-USD", None)

        page = asyncio.run(go())
    check(page.ticks, sorted({t["a"]: t for t in body}.values(), key=lambda t: (t["T"], t["a"])))
