"""Scheduled ingestion and the /markets endpoints, against a fake Binance on 127.0.0.1."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.api.conftest import make_settings, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "market" / "sources"))
from fake_exchange import FakeExchange, server_error  # noqa: E402
from test_binance import Market, truth  # noqa: E402


def recent_trades(n: int) -> list[dict]:
    trades = truth(n)
    shift = int((time.time() - 1800) * 1000) - trades[0]["T"]
    return [{**t, "T": t["T"] + shift} for t in trades]


def settings_for(tmp: Path, url: str, **over: object):  # noqa: ANN201
    kw = {"markets": ["binance:BTC-USD"], "source_urls": {"binance": url}, "ingest": True,
          "pull_interval_s": 0.3, **over}
    return make_settings(tmp, **kw)


def test_schedule_pulls_reports_status_and_resumes_after_restart(tmp_path: Path) -> None:
    trades = recent_trades(120)
    market = Market(trades[:80])
    with FakeExchange(market) as fx:
        settings = settings_for(tmp_path, fx.url)
        with TestClient(create_app(settings)) as c:
            store = c.app.state.store
            wait_for(lambda: store.count("binance", "BTC-USD") == 80)
            fx.inject(*[server_error(500)] * 12)  # more than a pull's retries
            wait_for(lambda: c.get("/markets").json()[0]["last_error"] is not None)
            fx.clear()
            wait_for(lambda: c.get("/markets").json()[0]["last_error"] is None)
            m = c.get("/markets").json()[0]
            assert m["exchange"] == "binance" and m["ticks_stored"] == 80
            assert m["last_tick_time"] == pytest.approx(trades[79]["T"] / 1000)
            assert 0 < m["lag_s"] < 3600 and m["next_run"] is not None and m["pulls"] >= 2
        market.trades = trades
        n_before = len(fx.requests)
        with TestClient(create_app(settings)) as c:
            store = c.app.state.store
            wait_for(lambda: store.count("binance", "BTC-USD") == 120)
            first = fx.requests[n_before]
            assert first.query["fromId"] == str(trades[79]["a"] + 1)  # resumed from the cursor
            ids = [str(x) for x in store.read("binance", "BTC-USD").trade_id]
            assert ids == [str(t["a"]) for t in trades]


def test_ingestion_off_means_no_pulls_but_pull_now_works(tmp_path: Path) -> None:
    trades = recent_trades(30)
    with FakeExchange(Market(trades)) as fx:
        with TestClient(create_app(settings_for(tmp_path, fx.url, ingest=False, api_key="k"))) as c:
            time.sleep(1.0)
            assert fx.requests == []
            assert c.post("/markets/binance/BTC-USD/pull").status_code == 401
            r = c.post("/markets/binance/BTC-USD/pull", headers={"X-API-Key": "k"})
            assert r.status_code == 200 and r.json()["new_ticks"] == 30
            again = c.post("/markets/binance/BTC-USD/pull", headers={"X-API-Key": "k"}).json()
            assert again["new_ticks"] == 0
            assert c.post("/markets/kraken/BTC-USD/pull", headers={"X-API-Key": "k"}).status_code == 404
            assert c.get("/markets").json()[0]["ingesting"] is False


def test_ticks_endpoint_and_csv_import(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as c:
        csv = "time,price,amount\n100,10.5,1\n101,10.6,2\n101,10.6,2\n105,10.4,0.5\n"
        r = c.post("/markets/kraken/ETH-USD/import", content=csv, headers={"content-type": "text/csv"})
        assert r.status_code == 200 and r.json() == {"exchange": "kraken", "symbol": "ETH-USD",
                                                     "rows": 4, "new_ticks": 4}
        assert c.post("/markets/kraken/ETH-USD/import", content=csv).json()["new_ticks"] == 0
        bad = "time,price,amount\n100,10.5,1\n101,-1,2\n"
        r = c.post("/markets/kraken/ETH-USD/import", content=bad)
        assert r.status_code == 422 and "row 3" in r.json()["detail"]
        assert c.get("/markets/kraken/ETH-USD/ticks").json()["count"] == 4  # nothing stored
        assert c.post("/markets/kraken/ETH-USD/import", content=b"\xff\xfe").status_code == 422
        got = c.get("/markets/kraken/ETH-USD/ticks", params={"start": 101, "end": 106}).json()
        assert got["count"] == 3 and [t["time"] for t in got["ticks"]] == [101, 101, 105]
        text = c.get("/markets/kraken/ETH-USD/ticks", params={"format": "csv", "limit": 2}).text
        assert text.splitlines() == ["time,price,amount", "100.0,10.5,1.0", "101.0,10.6,2.0"]
        assert c.get("/markets/kraken/ETH-USD/ticks", params={"start": 5, "end": 1}).status_code == 422
        assert c.get("/markets/kra%20ken/ETH-USD/ticks").status_code == 422
        assert c.get("/markets/nowhere/ETH-USD/ticks").json()["count"] == 0


def test_retraining_schedule_queues_if_better_jobs(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        make_settings(tmp_path, retrain_cron="every tuesday")
    settings = make_settings(tmp_path, retrain_cron="0 3 * * *", markets=["synthetic:BTC-USD"])
    with TestClient(create_app(settings)) as c:
        ingestor = c.app.state.ingestor
        assert ingestor.scheduler.get_job("retrain") is not None
        ingestor._retrain()  # what the cron trigger runs
        jobs = c.get("/jobs").json()
        assert len(jobs) == 1 and jobs[0]["spec"]["activate"] == "if_better"
        assert jobs[0]["spec"]["exchange"] == "synthetic"
