"""Kraken source against a real HTTP server on 127.0.0.1 speaking Kraken's Trades format.

The ground truth is a list of trades; the fake pages it by `since` (exclusive, ns) the
way Kraken does, and faults are injected between pages. Whatever the faults, paging by
the returned cursor must reproduce the ground truth exactly.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.market.sources.base import MalformedResponse, Page, RateLimited, SourceError, UnknownSymbol
from app.market.sources.kraken import KrakenSource
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

SAMPLES = Path(__file__).resolve().parents[4] / "shared" / "exchange_samples"
T0 = 1_700_000_000.0


def make_truth(n: int = 2600, seed: int = 1) -> list[list[Any]]:
    """Kraken rows oldest first; several trades share a timestamp, as on the real feed."""
    rng = np.random.default_rng(seed)
    gaps = np.where(rng.random(n) < 0.2, 0.0, rng.exponential(0.5, n))
    times = np.round(T0 + np.cumsum(gaps), 6)
    rows = []
    for i, t in enumerate(times):
        side, kind = ("b" if rng.random() < 0.5 else "s"), ("m" if rng.random() < 0.5 else "l")
        rows.append(
            [
                f"{30000 + rng.normal(0, 5):.5f}",
                f"{rng.exponential(0.1):.8f}",
                float(t),
                side,
                kind,
                "",
                61_000_000 + i,
            ]
        )
    return rows


def ns(t: float) -> int:
    return int(round(t * 1e9))


class KrakenFake:
    """Kraken's Trades paging over `truth`: since is an exclusive ns cursor; pages of 1000."""

    def __init__(self, truth: list[list[Any]], page: int = 1000) -> None:
        self.truth, self.page = truth, page

    def __call__(self, req: Request) -> Any:
        assert req.path == "/0/public/Trades"
        if req.query.get("pair") != "XBTUSD":
            return {"error": ["EQuery:Unknown asset pair"]}
        since = int(req.query.get("since", "0"))
        if since < 10**12:  # seconds, as Kraken also accepts
            since *= 10**9
        rows = [r for r in self.truth if ns(r[2]) > since][: self.page]
        last = str(ns(rows[-1][2])) if rows else str(since)
        return {"error": [], "result": {"XXBTZUSD": rows, "last": last}}


def expected(rows: list[list[Any]]) -> TickArrays:
    return TickArrays(
        np.array([r[2] for r in rows]),
        np.array([float(r[0]) for r in rows]),
        np.array([float(r[1]) for r in rows]),
        np.array([str(r[6]) for r in rows], dtype=object),
        np.array(["buy" if r[3] == "b" else "sell" for r in rows], dtype=object),
    )


def assert_ticks_equal(a: TickArrays, b: TickArrays) -> None:
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.time, b.time)
    np.testing.assert_array_equal(a.price, b.price)
    np.testing.assert_array_equal(a.amount, b.amount)
    assert list(a.trade_id) == list(b.trade_id)
    assert list(a.side) == list(b.side)


def source(url: str, **kw: Any) -> KrakenSource:
    kw = {"min_interval_s": 0.0, "backoff_s": 0.01, "timeout": 2.0, **kw}
    return KrakenSource(url, **kw)


def fetch_once(url: str, cursor: str | None = None, symbol: str = "BTC-USD", **kw: Any) -> Page:
    """One fetch on a fresh source inside its own event loop (a client belongs to one loop)."""

    async def go() -> Page:
        src = source(url, **kw)
        try:
            return await src.fetch(symbol, cursor)
        finally:
            await src.aclose()

    return asyncio.run(go())


async def pull_all(src: KrakenSource, cursor: str | None, start: float | None = None) -> list[Page]:
    pages = []
    while True:
        p = await src.fetch("BTC-USD", cursor, start=start)
        pages.append(p)
        cursor = p.cursor if p.cursor is not None else cursor
        if not p.more:
            return pages


def test_pair_mapping() -> None:
    src = KrakenSource("http://127.0.0.1:1")
    assert src.pair("BTC-USD") == "XBTUSD"
    assert src.pair("eth/eur") == "ETHEUR"
    assert src.pair("XBTUSD") == "XBTUSD"
    with pytest.raises(UnknownSymbol):
        src.pair("bitcoin")
    assert KrakenSource.min_interval_s == 1.0 and KrakenSource.page_size == 1000
    asyncio.run(src.aclose())


def test_paging_by_cursor_reproduces_truth() -> None:
    truth = make_truth()
    with FakeExchange(KrakenFake(truth)) as fx:

        async def go() -> list[Page]:
            src = source(fx.url)
            try:
                return await pull_all(src, None, start=T0 - 1)
            finally:
                await src.aclose()

        pages = asyncio.run(go())
        assert [len(p.ticks) for p in pages] == [1000, 1000, 600]
        assert [p.more for p in pages] == [True, True, False]
        assert_ticks_equal(TickArrays.concat(p.ticks for p in pages), expected(truth))
        # The first request starts at `start` in ns; later ones pass back `last` verbatim.
        assert fx.requests[0].query["since"] == str(int((T0 - 1) * 1e9))
        assert [r.query["since"] for r in fx.requests[1:]] == [pages[0].cursor, pages[1].cursor]
        assert pages[-1].cursor == str(ns(truth[-1][2]))


def test_faults_then_recovery_store_equals_truth() -> None:
    """429 + Retry-After, 500s, a hung request: each page still arrives whole and once."""
    truth = make_truth(2100)
    with FakeExchange(KrakenFake(truth)) as fx:

        async def go() -> tuple[list[TickArrays], float]:
            src = source(fx.url, timeout=0.3, retries=4)
            got, cursor = [], None
            fx.inject(rate_limited(0.25))
            t = time.monotonic()
            p = await src.fetch("BTC-USD", cursor)
            waited = time.monotonic() - t
            got.append(p.ticks)
            fx.inject(server_error(), server_error(502), server_error(503))
            p = await src.fetch("BTC-USD", p.cursor)
            got.append(p.ticks)
            fx.inject(hang(1.0))
            p = await src.fetch("BTC-USD", p.cursor)
            got.append(p.ticks)
            assert not p.more
            await src.aclose()
            return got, waited

        got, waited = asyncio.run(go())
        assert waited >= 0.2  # Retry-After honoured
        assert fx.pending_faults() == 0
        assert len(fx.requests) == 2 + 4 + 2  # 429+ok, 3x5xx+ok, hang+ok
        assert_ticks_equal(TickArrays.concat(got), expected(truth))


def test_retries_exhausted_raise() -> None:
    with FakeExchange(KrakenFake(make_truth(10))) as fx:
        fx.inject(server_error(), times=2)
        with pytest.raises(SourceError, match=r"kraken.*/0/public/Trades.*HTTP 500"):
            fetch_once(fx.url, retries=1)
        fx.inject(rate_limited(0.01), times=2)
        with pytest.raises(RateLimited):
            fetch_once(fx.url, retries=1)


def test_truncated_json_is_malformed_and_cursor_not_advanced() -> None:
    truth = make_truth(1500)
    with FakeExchange(KrakenFake(truth)) as fx:

        async def go() -> tuple[Page, Page]:
            src = source(fx.url)
            first = await src.fetch("BTC-USD", None)
            fx.inject(truncated(0.6))
            with pytest.raises(MalformedResponse, match="nothing stored, cursor unchanged"):
                await src.fetch("BTC-USD", first.cursor)
            again = await src.fetch("BTC-USD", first.cursor)  # the caller still holds the old cursor
            await src.aclose()
            return first, again

        first, again = asyncio.run(go())
        assert fx.requests[1].query["since"] == fx.requests[2].query["since"] == first.cursor
        assert_ticks_equal(TickArrays.concat([first.ticks, again.ticks]), expected(truth))


def test_in_body_rate_limit_is_retried_then_raised() -> None:
    truth = make_truth(5)
    too_many = Response.json({"error": ["EGeneral:Too many requests"]})
    with FakeExchange(KrakenFake(truth)) as fx:
        fx.inject(too_many, times=2)
        p = fetch_once(fx.url)
        assert_ticks_equal(p.ticks, expected(truth))
        assert len(fx.requests) == 3
        fx.inject(too_many, times=3)
        with pytest.raises(RateLimited, match="Too many requests") as ei:
            fetch_once(fx.url, retries=2)
        assert ei.value.retry_after > 0


def test_other_errors() -> None:
    with FakeExchange(KrakenFake(make_truth(5))) as fx:
        with pytest.raises(UnknownSymbol, match="XBTEUR"):
            fetch_once(fx.url, symbol="BTC-EUR")
        fx.inject(Response.json({"error": ["EService:Unavailable"]}))
        with pytest.raises(SourceError, match="EService:Unavailable"):
            fetch_once(fx.url)
        for bad in (
            {"error": [], "result": {"XXBTZUSD": [["x", "1", 1.0, "b", "m", "", 1]], "last": "5"}},
            {"error": [], "result": {"XXBTZUSD": [], "last": None}},
            {"error": [], "result": {"XXBTZUSD": [["1", "1", 1.0, "q", "m", "", 1]], "last": "5"}},
            {"result": {}},
            [1, 2],
        ):
            fx.inject(Response.json(bad))
            with pytest.raises(MalformedResponse):
                fetch_once(fx.url)
        with pytest.raises(SourceError, match="cursor"):
            fetch_once(fx.url, "not-a-cursor")


def test_empty_page_keeps_cursor() -> None:
    truth = make_truth(3)
    with FakeExchange(KrakenFake(truth)) as fx:
        cursor = str(ns(truth[-1][2]))
        p = fetch_once(fx.url, cursor)
        assert len(p.ticks) == 0 and p.cursor == cursor and p.more is False


def test_duplicates_and_out_of_order_rows_are_sorted_and_deduplicated() -> None:
    truth = make_truth(50)
    shuffled = [truth[i] for i in np.random.default_rng(3).permutation(50)]
    body = {"error": [], "result": {"XXBTZUSD": shuffled + truth[10:20], "last": str(ns(truth[-1][2]))}}
    with FakeExchange(lambda req: body) as fx:
        p = fetch_once(fx.url)
        assert_ticks_equal(p.ticks, expected(truth))
        assert p.more is False


@pytest.mark.parametrize("name", ["kraken.json", "kraken_docs_example.json"])
@pytest.mark.real_data
def test_real_sample_shape(name: str) -> None:
    path = SAMPLES / name
    if not path.exists():
        pytest.skip(f"sample {path} not available")
    raw = path.read_bytes()
    body = json.loads(raw)
    key = next(k for k in body["result"] if k != "last")
    rows = body["result"][key]
    with FakeExchange(lambda req: Response(200, raw, {"Content-Type": "application/json"})) as fx:
        p = fetch_once(fx.url)
    assert len(p.ticks) == len({r[6] for r in rows})
    assert p.cursor == body["result"]["last"]
    assert p.more == (len(rows) == 1000)
    assert np.all(np.diff(p.ticks.time) >= 0)
    assert set(p.ticks.side) <= {"buy", "sell"}
    assert p.ticks.trade_id[0] == str(min(r[6] for r in rows))
