"""HttpSource's robustness against a real server on 127.0.0.1: the behaviour every
exchange module relies on so that a pull either returns complete data or raises."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from app.market.sources import SOURCES, make_source
from app.market.sources.base import (
    HttpSource,
    MalformedResponse,
    Page,
    RateLimited,
    SourceError,
    normalise_symbol,
    ticks_from_rows,
)
from app.market.ticks import Tick, TickArrays, TickError
from tests.helpers.fake_exchange import FakeExchange, Response, hang, rate_limited, server_error, truncated


class Dummy(HttpSource):
    """Only the shared HTTP machinery is under test here."""

    name = "dummy"
    min_interval_s = 0.0

    def pair(self, symbol: str) -> str:
        return symbol

    async def fetch(self, symbol: str, cursor: str | None, *, start: float | None = None) -> Page:
        return Page(TickArrays.empty(), cursor, False)


def mk(fx: FakeExchange, **kw) -> Dummy:
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("timeout", 2.0)
    return Dummy(fx.url, **kw)


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def fx():
    with FakeExchange(lambda req: {"ok": True, "q": req.query}) as f:
        yield f


def test_ok_and_params(fx: FakeExchange) -> None:
    async def go():
        src = mk(fx)
        try:
            return await src.get_json("/p", {"a": 1, "b": "x"})
        finally:
            await src.aclose()

    assert run(go()) == {"ok": True, "q": {"a": "1", "b": "x"}}
    assert fx.requests[0].path == "/p"


def test_retry_after_is_honoured(fx: FakeExchange) -> None:
    fx.inject(rate_limited(0.3))

    async def go():
        async with mk(fx) as src:
            return await src.get_json("/p")

    assert run(go())["ok"]
    assert len(fx.requests) == 2
    assert fx.requests[1].time - fx.requests[0].time >= 0.28


def test_418_and_http_date_retry_after(fx: FakeExchange) -> None:
    fx.inject(rate_limited(0.1, status=418))

    async def go():
        async with mk(fx) as src:
            return await src.get_json("/p")

    assert run(go())["ok"]
    assert len(fx.requests) == 2


def test_rate_limited_after_retries(fx: FakeExchange) -> None:
    fx.inject(rate_limited(0.05), times=10)

    async def go():
        async with mk(fx, retries=2) as src:
            await src.get("/trades")

    with pytest.raises(RateLimited) as ei:
        run(go())
    assert ei.value.retry_after == pytest.approx(0.05)
    assert "dummy" in str(ei.value) and "/trades" in str(ei.value) and "429" in str(ei.value)
    assert len(fx.requests) == 3


def test_retry_after_capped(fx: FakeExchange) -> None:
    fx.inject(rate_limited(60))

    async def go():
        async with mk(fx, max_backoff_s=0.1) as src:
            t = time.monotonic()
            await src.get("/p")
            return time.monotonic() - t

    assert run(go()) < 2


def test_5xx_then_recovery(fx: FakeExchange) -> None:
    fx.inject(server_error(500), server_error(503), server_error(502))

    async def go():
        async with mk(fx) as src:
            return await src.get_json("/p")

    assert run(go())["ok"]
    assert len(fx.requests) == 4


def test_5xx_exhausted(fx: FakeExchange) -> None:
    fx.inject(server_error(500), times=10)

    async def go():
        async with mk(fx, retries=2) as src:
            await src.get("/trades")

    with pytest.raises(SourceError) as ei:
        run(go())
    assert not isinstance(ei.value, RateLimited)
    assert "dummy" in str(ei.value) and "/trades" in str(ei.value) and "500" in str(ei.value)
    assert len(fx.requests) == 3


def test_timeout_then_recovery(fx: FakeExchange) -> None:
    fx.inject(hang(1.0))

    async def go():
        async with mk(fx, timeout=0.2) as src:
            return await src.get_json("/p")

    assert run(go())["ok"]
    assert len(fx.requests) == 2


def test_timeout_exhausted(fx: FakeExchange) -> None:
    fx.inject(hang(1.0), times=3)

    async def go():
        async with mk(fx, timeout=0.1, retries=1) as src:
            await src.get("/p")

    with pytest.raises(SourceError, match="timed out"):
        run(go())


def test_connection_refused_is_retried_then_fails() -> None:
    with FakeExchange(lambda r: {}) as f:
        url = f.url  # the port is free once the server stops

    async def go():
        async with Dummy(url, backoff_s=0.01, retries=1, timeout=0.5) as src:
            await src.get("/p")

    with pytest.raises(SourceError, match="network error"):
        run(go())


def test_4xx_fails_at_once(fx: FakeExchange) -> None:
    fx.inject(Response.json({"code": -1121, "msg": "Invalid symbol."}, 400))

    async def go():
        async with mk(fx) as src:
            await src.get("/p")

    with pytest.raises(SourceError, match="check the symbol"):
        run(go())
    assert len(fx.requests) == 1


def test_truncated_json_is_malformed(fx: FakeExchange) -> None:
    fx.inject(truncated())

    async def go():
        async with mk(fx) as src:
            await src.get_json("/p")

    with pytest.raises(MalformedResponse, match="dummy"):
        run(go())


def test_min_interval_spacing(fx: FakeExchange) -> None:
    async def go():
        async with mk(fx, min_interval_s=0.1) as src:
            await asyncio.gather(*(src.get("/p") for _ in range(4)))

    run(go())
    times = sorted(r.time for r in fx.requests)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 0.08


def test_shared_client_not_closed(fx: FakeExchange) -> None:
    async def go():
        async with httpx.AsyncClient() as client:
            src = Dummy(fx.url, client=client)
            await src.aclose()
            assert not client.is_closed
            own = Dummy(fx.url)
            await own.aclose()
            assert own._client.is_closed

    run(go())


@pytest.mark.parametrize("s", ["BTC-USD", "btc-usd", "BTC/USD", "BTCUSD", " btc_usd "])
def test_normalise_symbol(s: str) -> None:
    assert normalise_symbol(s) == ("BTC", "USD")


@pytest.mark.parametrize("s", ["", "BTC", "BTC-USD-X", "BTCUSDT", "B$C-USD"])
def test_normalise_symbol_rejects(s: str) -> None:
    with pytest.raises(ValueError, match="BASE-QUOTE"):
        normalise_symbol(s)


def test_ticks_from_rows_sorts_and_dedups() -> None:
    rows = [
        Tick(2.0, 10, 1, "3", "buy"),
        Tick(1.0, 10, 1, "10", "sell"),
        Tick(2.0, 11, 1, "2", None),
        Tick(1.0, 10, 1, "10", "sell"),
        Tick(1.0, 9, 1, "9", "buy"),
    ]
    t = ticks_from_rows(rows)
    assert list(t.trade_id) == ["9", "10", "2", "3"]
    assert list(t.time) == [1.0, 1.0, 2.0, 2.0]
    assert ticks_from_rows([]).time.size == 0
    with pytest.raises(TickError):
        ticks_from_rows([Tick(1.0, -1.0, 1, "1")])


def test_registry() -> None:
    for name in ("bitstamp", "binance", "coinbase"):
        assert name in SOURCES
        src = make_source(name, "http://127.0.0.1:9")
        assert src.name == name and src.base_url == "http://127.0.0.1:9"
        run(src.aclose())
    with pytest.raises(ValueError, match="unknown source"):
        make_source("nope")
