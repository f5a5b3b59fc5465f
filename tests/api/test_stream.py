"""GET /stream/{exchange}/{symbol}: Server-Sent Events from a live server, read by a real client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from app.main import create_app
from app.market.ticks import TickArrays
from tests.helpers.apps import app_store, install_models, make_settings
from tests.helpers.binance import BinanceFake as Market
from tests.helpers.binance import recent_trades
from tests.helpers.bodies import body, csv_body
from tests.helpers.fake_exchange import FakeExchange
from tests.helpers.servers import answers, free_port, live_server, wait_for
from tests.helpers.sse import Event, EventStream

STREAM = "/stream/synthetic/BTC-USD"


def store_ticks(tmp: Path, ticks: TickArrays, exchange: str = "synthetic", symbol: str = "BTC-USD") -> None:
    with app_store(tmp) as store:
        store.insert(exchange, symbol, ticks)


def predicted(url: str, ticks: TickArrays, end: int) -> float:
    """/predict's answer for the window that ends at tick `end - 1`."""
    r = httpx.post(f"{url}/predict", json=body(ticks[:end], n=40))
    assert r.status_code == 200, r.text
    return r.json()["probability"]


def assert_tick(e: Event, ticks: TickArrays, i: int, url: str | None) -> None:
    d = e.json()
    assert (d["time"], d["price"], d["amount"]) == (ticks.time[i], ticks.price[i], ticks.amount[i])
    if url is None:
        assert d["probability"] is None and d["model_id"] is None
    else:
        assert d["probability"] == pytest.approx(predicted(url, ticks, i + 1), abs=1e-6)
        assert d["decision"] == (d["probability"] >= d["threshold"])


def test_backlog_then_each_new_tick_scored_as_predict_would(tmp_path: Path, trained, ticks) -> None:
    ids = install_models(tmp_path, trained)
    store_ticks(tmp_path, ticks[:3000])
    app = create_app(make_settings(tmp_path))
    with live_server(app) as url, EventStream(f"{url}{STREAM}?backlog=5") as s:
        assert s.response.headers["content-type"].startswith("text/event-stream")
        first = s.next()
        assert first is not None and first.event == "reset"
        assert first.json() == {"exchange": "synthetic", "symbol": "BTC-USD"}
        backlog = s.take(5)
        for k, e in enumerate(backlog):
            assert_tick(e, ticks, 2995 + k, url)
            assert e.json()["model_id"] == ids[0]
        assert len({e.id for e in backlog}) == 5

        # new ticks stored by anyone (here a CSV import) are pushed, each once, in order
        r = httpx.post(f"{url}/markets/synthetic/BTC-USD/import", content=csv_body(ticks[3000:3003]))
        assert r.status_code == 200 and r.json()["new_ticks"] == 3
        for k, e in enumerate(s.take(3)):
            assert_tick(e, ticks, 3000 + k, url)

        # a re-import stores nothing, so nothing is pushed; the next real tick is
        httpx.post(f"{url}/markets/synthetic/BTC-USD/import", content=csv_body(ticks[3000:3004]))
        assert_tick(s.take(1)[0], ticks, 3003, url)


def test_reconnect_with_last_event_id_gets_exactly_what_it_missed(tmp_path: Path, trained, ticks) -> None:
    install_models(tmp_path, trained)
    store_ticks(tmp_path, ticks[:2000])
    with live_server(create_app(make_settings(tmp_path))) as url:
        with EventStream(f"{url}{STREAM}?backlog=3") as s:
            seen = s.take(3)
        httpx.post(f"{url}/markets/synthetic/BTC-USD/import", content=csv_body(ticks[2000:2004]))
        with EventStream(f"{url}{STREAM}", headers={"Last-Event-ID": seen[-1].id or ""}) as s:
            missed = s.take(4)  # no reset first: the series goes on
            for k, e in enumerate(missed):
                assert_tick(e, ticks, 2000 + k, url)
        with EventStream(f"{url}{STREAM}?backlog=2", headers={"Last-Event-ID": "garbage"}) as s:
            assert s.next().event == "reset"  # type: ignore[union-attr]
            assert [e.json()["time"] for e in s.take(2)] == ticks.time[2002:2004].tolist()


def test_disconnected_clients_are_cleaned_up(tmp_path: Path, trained, ticks) -> None:
    install_models(tmp_path, trained)
    store_ticks(tmp_path, ticks[:1000])
    app = create_app(make_settings(tmp_path))
    with live_server(app) as url:
        feeds = app.state.services.feeds
        a = EventStream(f"{url}{STREAM}?backlog=1")
        b = EventStream(f"{url}{STREAM}?backlog=1")
        a.take(1), b.take(1)
        assert feeds.clients == 2 and len(feeds.feeds) == 1  # one feed serves both
        feed = next(iter(feeds.feeds.values()))
        a.close()
        wait_for(lambda: feeds.clients == 1)
        assert feed.running
        b.close()
        wait_for(lambda: feeds.clients == 0 and not feeds.feeds and not feed.running)
        # the service streams again afterwards
        with EventStream(f"{url}{STREAM}?backlog=1") as c:
            assert len(c.take(1)) == 1
        assert "tickcast_stream_clients" in httpx.get(f"{url}/metrics").text


def test_refusals_come_before_the_stream(tmp_path: Path, ticks) -> None:
    store_ticks(tmp_path, ticks[:100])
    store_ticks(tmp_path, ticks[:100], "kraken", "ETH-USD")  # stored, though not configured
    app = create_app(make_settings(tmp_path, stream_max_clients=1))
    with live_server(app) as url:
        assert httpx.get(f"{url}/stream/kraken/XRP-USD").status_code == 404
        assert httpx.get(f"{url}/stream/kraken/BTC%20USD").status_code == 422
        assert httpx.get(f"{url}{STREAM}?backlog=-1").status_code == 422
        with EventStream(f"{url}/stream/kraken/ETH-USD?backlog=2") as s:
            # no model: ticks still flow, without a probability
            for k, e in enumerate(s.take(2)):
                assert_tick(e, ticks, 98 + k, None)
            busy = httpx.get(f"{url}{STREAM}")
            assert busy.status_code == 503 and busy.headers["retry-after"]
            assert "TICKCAST_STREAM_MAX_CLIENTS" in busy.json()["detail"]
        wait_for(lambda: app.state.services.feeds.clients == 0)
        with EventStream(f"{url}{STREAM}?backlog=1") as s:
            assert s.response.status_code == 200 and len(s.take(1)) == 1


def test_a_pull_is_pushed_at_once_not_at_the_next_poll(tmp_path: Path, trained) -> None:
    install_models(tmp_path, trained)
    trades = recent_trades(80)
    market = Market(trades[:50])
    with FakeExchange(market) as fx:
        settings = make_settings(
            tmp_path, markets=["binance:BTC-USD"], source_urls={"binance": fx.url}, stream_poll_s=60
        )
        with live_server(create_app(settings)) as url:
            assert httpx.post(f"{url}/markets/binance/BTC-USD/pull").json()["new_ticks"] == 50
            with EventStream(f"{url}/stream/binance/BTC-USD?backlog=0", timeout=15) as s:
                assert s.next().event == "reset"  # type: ignore[union-attr]
                market.trades = trades
                assert httpx.post(f"{url}/markets/binance/BTC-USD/pull").json()["new_ticks"] == 30
                got = s.take(30)  # within the read timeout, far sooner than the 60 s poll
                assert [e.json()["time"] for e in got] == [t["T"] / 1000 for t in trades[50:]]
                assert all(e.json()["probability"] is not None for e in got)


def test_shutdown_ends_open_streams(tmp_path: Path, ticks) -> None:
    """SIGTERM with a dashboard open: the process exits promptly instead of waiting for
    the never-ending response (uvicorn drains responses before the lifespan shutdown)."""
    store_ticks(tmp_path, ticks[:100])
    port = free_port()
    env = {
        **os.environ,
        "TICKCAST_PORT": str(port),
        "TICKCAST_STORE_PATH": str(tmp_path / "db" / "tickcast.db"),
        "TICKCAST_MODELS_DIR": str(tmp_path / "models"),
        "TICKCAST_BOOTSTRAP": "false",
        "TICKCAST_INGEST": "false",
        "TICKCAST_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: answers(url), timeout=60)
        with EventStream(f"{url}{STREAM}?backlog=1") as s:
            s.take(1)
            proc.send_signal(signal.SIGTERM)
            assert s.next() is None  # the server ended the stream
        # uvicorn re-raises the signal once it has shut down, as if unhandled
        assert proc.wait(timeout=20) in (0, -signal.SIGTERM)
        assert b"Traceback" not in proc.stdout.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def _burst(url: str, n: int) -> list[tuple[int, str | None]]:
    """n clients connect at once; each 200 reads its first event and stays connected until every
    client has its answer, so none leaves before all were counted. (status, first event)."""
    import asyncio

    answered = 0
    all_answered = asyncio.Event()

    async def one(client: httpx.AsyncClient) -> tuple[int, str | None]:
        nonlocal answered
        async with client.stream("GET", url) as r:
            answered += 1
            if answered == n:
                all_answered.set()
            first = None
            if r.status_code == 200:
                lines = r.aiter_lines()
                while (line := await anext(lines)) != "":
                    if line.startswith("event:"):
                        first = line.partition(":")[2].strip()
                await asyncio.wait_for(all_answered.wait(), 60)
            return r.status_code, first

    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        return await asyncio.gather(*(one(client) for _ in range(n)))


def _assert_exactly(got: list[tuple[int, str | None]], admitted: int) -> None:
    statuses = sorted(s for s, _ in got)
    assert statuses.count(200) == admitted and statuses.count(503) == len(got) - admitted, statuses
    assert {e for s, e in got if s == 200} == {"reset"}  # a 200 is a stream, never an error event


@pytest.mark.parametrize("warm", [False, True], ids=["cold market", "warm market"])
def test_a_burst_admits_exactly_the_limit(tmp_path: Path, trained, ticks, warm: bool) -> None:
    """Cold: no stream is open, so every client waits for the feed's first read (scoring 1000
    ticks); warm: one client already holds the feed. Either way only the limit gets a 200."""
    import asyncio

    install_models(tmp_path, trained)
    store_ticks(tmp_path, ticks[:3000])
    cap, n = 5, 60
    app = create_app(make_settings(tmp_path, stream_max_clients=cap))
    with live_server(app) as url:
        feeds = app.state.services.feeds
        holder = EventStream(f"{url}{STREAM}?backlog=1") if warm else None
        if holder is not None:
            holder.take(1)
        _assert_exactly(asyncio.run(_burst(f"{url}{STREAM}?backlog=1000", n)), cap - warm)
        if holder is not None:
            holder.close()
        wait_for(lambda: feeds.clients == 0 and not feeds.feeds)
        # every seat came back: the next burst is admitted just the same
        _assert_exactly(asyncio.run(_burst(f"{url}{STREAM}?backlog=1000", n)), cap)
        wait_for(lambda: feeds.clients == 0)


def test_backlog_is_validated_against_what_a_feed_keeps(tmp_path: Path, trained, ticks) -> None:
    from app.api.routes.stream import MAX_BACKLOG

    install_models(tmp_path, trained)
    store_ticks(tmp_path, ticks[:1200])
    app = create_app(make_settings(tmp_path))
    with live_server(app) as url:
        assert app.state.services.feeds.ring == MAX_BACKLOG == 1000  # the documented maximum is the real one
        spec = httpx.get(f"{url}/openapi.json").json()
        [param] = [
            p
            for p in spec["paths"]["/stream/{exchange}/{symbol}"]["get"]["parameters"]
            if p["name"] == "backlog"
        ]
        assert param["schema"]["maximum"] == MAX_BACKLOG
        for too_many in (1001, 5000):
            r = httpx.get(f"{url}{STREAM}", params={"backlog": too_many})
            assert r.status_code == 422, r.text
            [err] = r.json()["detail"]
            assert err["loc"] == ["query", "backlog"] and "1000" in err["msg"]
        assert app.state.services.feeds.clients == 0  # a refusal takes no seat
        with EventStream(f"{url}{STREAM}?backlog={MAX_BACKLOG}") as s:
            got = s.take(MAX_BACKLOG)
            assert got[0].json()["time"] == ticks.time[200] and got[-1].json()["time"] == ticks.time[1199]
