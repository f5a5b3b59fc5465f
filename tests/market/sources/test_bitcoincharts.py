"""bitcoincharts source against a real HTTP server on 127.0.0.1 serving `trades.csv`.

bitcoincharts has no trade ids and pages by whole seconds (`start` inclusive, 2000
rows), so the hard part is a busy second split across pages: the "<time>:<count>"
cursor must neither lose nor repeat its trades. The fake pages a ground truth exactly
as the API does; paging by cursor, with faults between pages, must reproduce it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.market.sources.base import MalformedResponse, Page, SourceError, UnknownSymbol
from app.market.sources.bitcoincharts import BitcoinchartsSource, parse_cursor
from app.market.ticks import TickArrays
from tests.helpers.bitcoincharts import ChartsFake, Row, csv_body
from tests.helpers.fake_exchange import FakeExchange, Response, hang, rate_limited, server_error, truncated

SAMPLES = Path(__file__).resolve().parents[4] / "shared" / "exchange_samples"
T0 = 1_315_922_016


def make_truth(n_seconds: int = 120, seed: int = 2, max_per_second: int = 9) -> list[Row]:
    """Trades in whole seconds, many seconds with several trades (some repeating price and amount)."""
    rng = np.random.default_rng(seed)
    rows: list[Row] = []
    t = T0
    for _ in range(n_seconds):
        t += int(rng.integers(1, 4))
        for _ in range(int(rng.integers(1, max_per_second + 1))):
            rows.append((t, round(6000 + float(rng.normal(0, 3)), 2), float(rng.choice([0.5, 1.0, 0.1234]))))
    return rows


def expected(rows: list[Row]) -> TickArrays:
    return TickArrays(
        np.array([r[0] for r in rows], dtype=float),
        np.array([r[1] for r in rows]),
        np.array([r[2] for r in rows]),
    )


def assert_ticks_equal(a: TickArrays, b: TickArrays) -> None:
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.time, b.time)
    np.testing.assert_array_equal(a.price, b.price)
    np.testing.assert_array_equal(a.amount, b.amount)
    assert a.trade_id is None and a.side is None


def source(url: str, page: int = 2000, **kw: Any) -> BitcoinchartsSource:
    kw = {"min_interval_s": 0.0, "backoff_s": 0.01, "timeout": 2.0, **kw}
    src = BitcoinchartsSource(url, **kw)
    src.page_size = page
    return src


def fetch_once(
    url: str,
    cursor: str | None = None,
    *,
    start: float | None = None,
    page: int = 2000,
    symbol: str = "BTC-USD",
    **kw: Any,
) -> Page:
    """One fetch on a fresh source in its own event loop (a client belongs to one loop)."""

    async def go() -> Page:
        src = source(url, page, **kw)
        try:
            return await src.fetch(symbol, cursor, start=start)
        finally:
            await src.aclose()

    return asyncio.run(go())


def test_pair_mapping() -> None:
    src = BitcoinchartsSource("http://127.0.0.1:1")
    assert src.pair("BTC-USD") == "bitstampUSD"
    assert BitcoinchartsSource("http://127.0.0.1:1", exchange="kraken").pair("btc/eur") == "krakenEUR"
    with pytest.raises(UnknownSymbol, match="bitcoin"):
        src.pair("ETH-USD")
    assert BitcoinchartsSource.min_interval_s == 1.0 and BitcoinchartsSource.page_size == 2000
    asyncio.run(src.aclose())


def test_paging_splits_busy_seconds_without_loss_or_duplicates() -> None:
    truth = make_truth()
    page = 25
    # The pages must end in the middle of seconds for this test to mean anything.
    splits = sum(1 for i in range(page, len(truth), page) if truth[i][0] == truth[i - 1][0])
    assert splits >= 3
    with FakeExchange(ChartsFake(truth, page)) as fx:

        async def go() -> list[Page]:
            src = source(fx.url, page)
            pages, cursor = [], None
            while True:
                p = await src.fetch("BTC-USD", cursor, start=T0 - 0.5)
                pages.append(p)
                cursor = p.cursor
                if not p.more:
                    break
            # Caught up: one more pull returns nothing and keeps the cursor.
            pages.append(await src.fetch("BTC-USD", cursor))
            await src.aclose()
            return pages

        pages = asyncio.run(go())
        assert fx.requests[0].query["start"] == str(T0)  # ceil(start): times are whole seconds
        assert all(p.more for p in pages[:-2]) and not pages[-2].more
        assert len(pages[-1].ticks) == 0 and pages[-1].cursor == pages[-2].cursor
        assert_ticks_equal(TickArrays.concat(p.ticks for p in pages), expected(truth))
        last_t = truth[-1][0]
        assert pages[-1].cursor == f"{last_t}:{sum(1 for r in truth if r[0] == last_t)}"


def test_live_edge_trades_arriving_in_a_pulled_second() -> None:
    """A pull at second t, then more trades print in second t: only those come next."""
    truth = make_truth(10)
    live = truth[:-2]
    with FakeExchange(ChartsFake(live)) as fx:

        async def go() -> list[Page]:
            src = source(fx.url)
            a = await src.fetch("BTC-USD", None, start=T0)
            live.extend(truth[-2:])  # same second or later
            b = await src.fetch("BTC-USD", a.cursor)
            await src.aclose()
            return [a, b]

        a, b = asyncio.run(go())
        assert_ticks_equal(TickArrays.concat([a.ticks, b.ticks]), expected(truth))
        assert fx.requests[1].query["start"] == a.cursor.split(":")[0]


def test_faults_then_recovery_store_equals_truth() -> None:
    truth = make_truth(60)
    page = 40
    with FakeExchange(ChartsFake(truth, page)) as fx:

        async def go() -> tuple[list[TickArrays], float]:
            src = source(fx.url, page, timeout=0.3, retries=4)
            faults = [
                [rate_limited(0.25)],
                [server_error(), server_error(503)],
                [hang(1.0)],
                [truncated(0.5)],
                [],
            ]
            got, cursor, waited = [], None, 0.0
            for i in range(100):
                batch = faults[i] if i < len(faults) else []
                fx.inject(*batch)
                t = time.monotonic()
                try:
                    p = await src.fetch("BTC-USD", cursor, start=T0)
                except MalformedResponse:
                    continue  # nothing stored, cursor kept: the next pull asks again
                if i == 0:
                    waited = time.monotonic() - t
                got.append(p.ticks)
                cursor = p.cursor
                if not p.more and not len(p.ticks):  # caught up (a short page may just be cut)
                    break
            await src.aclose()
            return got, waited

        got, waited = asyncio.run(go())
        assert waited >= 0.2
        assert fx.pending_faults() == 0
        assert_ticks_equal(TickArrays.concat(got), expected(truth))


def test_truncated_csv_is_malformed_and_cursor_not_advanced() -> None:
    truth = make_truth(30)
    with FakeExchange(ChartsFake(truth, 20)) as fx:
        first = fetch_once(fx.url, start=T0, page=20)
        fx.inject(truncated(0.53))  # mid-line (rows are 44 bytes)
        with pytest.raises(MalformedResponse, match="truncated"):
            fetch_once(fx.url, first.cursor, page=20)
        again = fetch_once(fx.url, first.cursor, page=20)
        assert fx.requests[1].query["start"] == fx.requests[2].query["start"]
        n = len(first.ticks) + len(again.ticks)
        assert len(first.ticks) == 20 and len(again.ticks) > 10
        assert_ticks_equal(TickArrays.concat([first.ticks, again.ticks]), expected(truth[:n]))
        # Cut exactly at a line end, a body is indistinguishable from a short page; the
        # cursor still points just after the last row returned, so nothing is lost.
        fx.inject(truncated(0.5))
        cut = fetch_once(fx.url, again.cursor, page=20)
        assert 0 < len(cut.ticks) <= 10 and not cut.more
        rest = fetch_once(fx.url, cut.cursor, page=20)
        assert len(rest.ticks)
        assert_ticks_equal(
            TickArrays.concat([first.ticks, again.ticks, cut.ticks, rest.ticks]),
            expected(truth[: n + len(cut.ticks) + len(rest.ticks)]),
        )


@pytest.mark.parametrize(
    "body",
    [
        "<html><body>Service unavailable</body></html>\n",
        "1315922016,5.8\n",
        "1315922016,abc,1.0\n",
        "1315922016,-5.8,1.0\n",
        b"\xff\xfe,1,1\n",
    ],
)
def test_malformed_bodies(body: str | bytes) -> None:
    with FakeExchange(lambda req: body) as fx:
        with pytest.raises(MalformedResponse):
            fetch_once(fx.url, start=T0)


def test_errors() -> None:
    with FakeExchange(ChartsFake(make_truth(5))) as fx:
        with pytest.raises(SourceError, match="HTTP 400.*check the symbol"):
            fetch_once(fx.url, symbol="BTC-EUR")
        fx.inject(server_error(), times=2)
        with pytest.raises(SourceError, match="bitcoincharts.*trades.csv.*HTTP 500"):
            fetch_once(fx.url, retries=1)
        with pytest.raises(SourceError, match="cursor"):
            fetch_once(fx.url, "12345")
    for bad in ("x:1", "1:-1", "nan:0", "1:2:3"):
        with pytest.raises(SourceError):
            parse_cursor(bad)
    assert parse_cursor("1315922016:3") == (1315922016.0, 3)


def test_empty_pages() -> None:
    with FakeExchange(lambda req: "") as fx:
        p = fetch_once(fx.url)
        assert len(p.ticks) == 0 and p.cursor is None and not p.more
        p = fetch_once(fx.url, f"{T0}:4")
        assert len(p.ticks) == 0 and p.cursor == f"{T0}:4" and not p.more
        p = fetch_once(fx.url, start=T0 + 0.2)
        assert len(p.ticks) == 0 and p.cursor == f"{T0 + 1}:0"


def test_out_of_order_rows_sorted_and_older_rows_dropped() -> None:
    truth = make_truth(20)
    # Swap whole seconds (within a second the server's order is the only order there is).
    cut = next(i for i in range(5, len(truth)) if truth[i][0] != truth[i - 1][0])
    rows = [(T0 - 5, 1.0, 1.0)] + truth[cut:] + truth[:cut]  # an older stray row, then out of order
    with FakeExchange(lambda req: csv_body(rows)) as fx:
        p = fetch_once(fx.url, start=T0)
    assert_ticks_equal(p.ticks, expected(truth))
    assert not p.more


def test_full_page_means_more() -> None:
    truth = make_truth(600, max_per_second=6)
    assert len(truth) > 2000
    with FakeExchange(ChartsFake(truth)) as fx:
        p = fetch_once(fx.url, start=T0)
    assert len(p.ticks) == 2000 and p.more
    t, k = parse_cursor(p.cursor)
    assert t == truth[1999][0] and k == sum(1 for r in truth[:2000] if r[0] == t)


def test_full_page_within_one_second_moves_on(caplog: pytest.LogCaptureFixture) -> None:
    """The API cannot page past `page` trades in one second; say so instead of looping."""
    truth = [(T0, 100.0 + i, 1.0) for i in range(15)] + [(T0 + 1, 1.0, 1.0)]
    with FakeExchange(ChartsFake(truth, 10)) as fx, caplog.at_level(logging.WARNING):
        p = fetch_once(fx.url, start=T0, page=10)
        assert len(p.ticks) == 10 and p.more and p.cursor == f"{T0 + 1}:0"
        assert "cannot page" in caplog.text
        q = fetch_once(fx.url, p.cursor, page=10)
        assert_ticks_equal(q.ticks, expected(truth[-1:]))


@pytest.mark.real_data
def test_real_sample_shape() -> None:
    path = SAMPLES / "bitcoincharts.csv"
    if not path.exists():
        pytest.skip(f"sample {path} not available")
    raw = path.read_bytes()
    lines = raw.decode().splitlines()
    with FakeExchange(lambda req: Response(200, raw, {"Content-Type": "text/plain"})) as fx:
        p = fetch_once(fx.url)
    assert len(p.ticks) == len(lines) and not p.more
    assert np.all(np.diff(p.ticks.time) >= 0)
    last = lines[-1].split(",")[0]
    assert p.cursor == f"{last}:{sum(1 for x in lines if x.split(',')[0] == last)}"
