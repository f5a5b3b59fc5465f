"""Pulling into the store: cursors persist, restarts resume, faults never lose or double a tick."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.market.sources.base import MalformedResponse, SourceError
from app.market.store import TickStore
from app.services.ingestion.pull import pull
from tests.helpers.binance import BinanceFake as Market
from tests.helpers.binance import mk, truth
from tests.helpers.fake_exchange import FakeExchange, server_error, truncated


def stored_ids(store: TickStore) -> list[str]:
    return [str(x) for x in store.read("binance", "BTC-USD").trade_id]


def run_pull(store: TickStore, fx: FakeExchange, **kw: object):
    async def go():
        src = mk(fx)
        try:
            return await pull(store, src, "binance", "BTC-USD", **kw)
        finally:
            await src.aclose()

    return asyncio.run(go())


def test_pull_pages_until_done_and_resumes(tmp_path: Path) -> None:
    trades = truth(95)
    market = Market(trades[:60], messy=True)
    with FakeExchange(market) as fx, TickStore(tmp_path / "t.db") as store:
        r = run_pull(store, fx, start=trades[0]["T"] / 1000)
        assert r.new_ticks == 60 and r.pages >= 6
        assert stored_ids(store) == [str(t["a"]) for t in trades[:60]]
        assert store.cursor("binance", "BTC-USD") == str(trades[59]["a"])
        # nothing new: one request from the cursor, nothing stored
        n_req = len(fx.requests)
        assert run_pull(store, fx).new_ticks == 0
        assert len(fx.requests) == n_req + 1
        assert fx.requests[-1].query["fromId"] == str(trades[59]["a"] + 1)
        market.trades = trades  # 35 more arrive
    # a restart: a new store object on the same file resumes from its cursor
    with FakeExchange(market) as fx, TickStore(tmp_path / "t.db") as store:
        assert run_pull(store, fx).new_ticks == 35
        assert fx.requests[0].query["fromId"] == str(trades[59]["a"] + 1)
        assert stored_ids(store) == [str(t["a"]) for t in trades]


@pytest.mark.parametrize("fault", [truncated(0.5), server_error(500)])
def test_a_failed_page_keeps_what_was_stored_and_the_cursor_behind_it(tmp_path: Path, fault) -> None:
    trades = truth(50)
    with FakeExchange(Market(trades)) as fx, TickStore(tmp_path / "t.db") as store:
        run_pull(store, fx, start=trades[0]["T"] / 1000, max_pages=2)  # 20 stored
        assert store.count("binance", "BTC-USD") == 20
        fx.inject(*[fault] * 10)  # more than the retries
        with pytest.raises((MalformedResponse, SourceError)):
            run_pull(store, fx)
        assert store.count("binance", "BTC-USD") == 20
        assert store.cursor("binance", "BTC-USD") == str(trades[19]["a"])
        fx.clear()  # the exchange recovers
        assert run_pull(store, fx).new_ticks == 30  # recovery: exactly the rest
        assert stored_ids(store) == [str(t["a"]) for t in trades]
