"""Replicas on one PostgreSQL database, as real `tickcast serve` processes against a Binance on
127.0.0.1 that tells the replicas apart (each asks through a base URL of its own): one replica
pulls each market, a kill -9 of it hands the market to another within two pull intervals with no
trade lost or doubled, a per-replica limit spreads markets, and a stream on a replica that does
not pull the market hears of a new tick within a second (its own poll is set to 30 s, so only
the notification can explain that)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from app.market.backends import open_tick_store
from tests.helpers.fake_exchange import FakeExchange
from tests.helpers.replicas import GrowingBinance, Replica
from tests.helpers.sse import EventStream

pytestmark = pytest.mark.postgres

INTERVAL = 0.5
BTC, ETH = ("binance", "BTC-USD"), ("binance", "ETH-USD")
PAIRS = {BTC: "BTCUSDT", ETH: "ETHUSDT"}


@contextmanager
def replicas(
    tmp: Path, db: str, exchange: str, n: int, markets: list[str], **env: str
) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    try:
        for i in range(n):
            started.append(
                Replica(
                    tmp,
                    f"r{i}",
                    db,
                    exchange,
                    markets,
                    TICKCAST_PULL_INTERVAL_S=str(INTERVAL),
                    TICKCAST_STREAM_POLL_S="30",
                    **env,
                )  # fmt: skip
            )
        for r in started:
            r.wait_ready()
        yield started
    except BaseException:
        for r in started:
            print(f"--- {r.tag} ---\n{r.tail()}")
        raise
    finally:
        for r in started:
            r.stop()


def stored_ids(db: str, market: tuple[str, str]) -> list[int]:
    store = open_tick_store(db)
    try:
        ticks = store.read(*market)
    finally:
        store.close()
    assert ticks.trade_id is not None or len(ticks) == 0
    return [int(t) for t in (ticks.trade_id if ticks.trade_id is not None else [])]


def wait_for(what: str, cond: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


def caught_up(db: str, ex: GrowingBinance, market: tuple[str, str]) -> Callable[[], bool]:
    return lambda: len(set(stored_ids(db, market))) == len(ex.ids(PAIRS[market]))


def test_one_replica_pulls_a_market_and_a_survivor_takes_over_losing_and_doubling_nothing(
    pg_url: str, tmp_path: Path
) -> None:
    ex = GrowingBinance({"BTCUSDT": 300})
    with FakeExchange(ex) as fx, replicas(tmp_path, pg_url, fx.url, 2, ["binance:BTC-USD"]) as rs:
        wait_for("the history stored", caught_up(pg_url, ex, BTC), 30)
        time.sleep(3 * INTERVAL)  # a few more pull rounds, in which only the leader may pull
        leaders = [r for r in rs if r.market(*BTC)["ingesting"]]
        assert len(leaders) == 1, [r.market(*BTC) for r in rs]
        (leader,) = leaders
        (other,) = [r for r in rs if r is not leader]
        assert ex.tags() == {leader.tag}  # the other replica never asked the exchange
        cursors = [s.from_id for s in ex.served if s.from_id is not None]
        assert cursors == sorted(cursors)  # one client's progression: never back, never twice ahead
        standby = other.market(*BTC)
        assert standby["scheduled"] and not standby["ingesting"] and standby["pulls"] == 0
        assert standby["last_error"] is None and standby["ticks_stored"] == 300  # the shared store

        # a stream on the replica that does not pull hears of the leader's new tick at once
        with EventStream(f"{other.url}/stream/binance/BTC-USD?backlog=0") as s:
            first = s.next(within=20)
            assert first is not None and first.event == "reset"
            (new_id,) = ex.add("BTCUSDT")
            event = s.next(within=10)
            heard = time.monotonic()
        assert event is not None and event.event == "tick"
        served = ex.served_at("BTCUSDT", new_id)
        assert served is not None and heard - served < 1.0  # stored after it was served: sooner still

        # kill -9 the leader while trades keep coming: the survivor takes over, from the cursor
        stop = threading.Event()

        def trade() -> None:
            while not stop.wait(0.05):
                ex.add("BTCUSDT")

        feeder = threading.Thread(target=trade, daemon=True)
        feeder.start()
        time.sleep(0.5)
        killed = time.monotonic()
        leader.kill()
        try:
            wait_for("a pull by the survivor", lambda: ex.first(other.tag, killed) is not None, 10)
        finally:
            time.sleep(1.0)
            stop.set()
            feeder.join()
        takeover = ex.first(other.tag, killed)
        assert takeover is not None and takeover - killed <= 2 * INTERVAL, takeover - killed
        wait_for("the survivor caught up", caught_up(pg_url, ex, BTC), 20)
        ids = stored_ids(pg_url, BTC)
        assert sorted(ids) == ex.ids("BTCUSDT")  # 0 lost and 0 doubled
        assert not [i for i, n in Counter(ids).items() if n > 1]
        assert other.market(*BTC)["ingesting"] and other.market(*BTC)["last_error"] is None


def test_a_limit_of_one_market_per_replica_spreads_two_markets_over_two(pg_url: str, tmp_path: Path) -> None:
    ex = GrowingBinance({"BTCUSDT": 50, "ETHUSDT": 80})
    markets = ["binance:BTC-USD", "binance:ETH-USD"]
    with (
        FakeExchange(ex) as fx,
        replicas(tmp_path, pg_url, fx.url, 2, markets, TICKCAST_INGEST_MAX_MARKETS="1") as rs,
    ):
        wait_for(
            "both histories stored", lambda: caught_up(pg_url, ex, BTC)() and caught_up(pg_url, ex, ETH)(), 30
        )
        pulled = {m: [r.tag for r in rs if r.market(*m)["ingesting"]] for m in (BTC, ETH)}
        assert sorted(len(v) for v in pulled.values()) == [1, 1], pulled
        assert pulled[BTC] != pulled[ETH]  # one each
        for m in (BTC, ETH):  # and only that one asked the exchange for it
            assert ex.tags(PAIRS[m]) == set(pulled[m])
            assert sorted(stored_ids(pg_url, m)) == ex.ids(PAIRS[m])
