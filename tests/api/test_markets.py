"""Scheduled ingestion and the /markets endpoints, against a fake Binance on 127.0.0.1."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.market.ticks import TickArrays
from tests.helpers.apps import install_models, make_settings, settings_for
from tests.helpers.binance import BinanceFake as Market
from tests.helpers.binance import recent_trades
from tests.helpers.bodies import body, csv_body
from tests.helpers.fake_exchange import FakeExchange, server_error
from tests.helpers.servers import wait_for


def test_schedule_pulls_reports_status_and_resumes_after_restart(tmp_path: Path) -> None:
    trades = recent_trades(120)
    market = Market(trades[:80])
    with FakeExchange(market) as fx:
        settings = settings_for(tmp_path, fx.url)
        with TestClient(create_app(settings)) as c:
            store = c.app.state.services.store
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
            store = c.app.state.services.store
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
        assert r.status_code == 200 and r.json() == {
            "exchange": "kraken",
            "symbol": "ETH-USD",
            "rows": 4,
            "new_ticks": 4,
        }
        assert c.post("/markets/kraken/ETH-USD/import", content=csv).json()["new_ticks"] == 0
        bad = "time,price,amount\n100,10.5,1\n101,-1,2\n"
        r = c.post("/markets/kraken/ETH-USD/import", content=bad)
        assert r.status_code == 422
        [err] = r.json()["detail"]
        assert "row 3" in err["msg"] and err["loc"] == ["body", "line", 3]
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
        ingestor = c.app.state.services.ingestor
        assert ingestor.scheduler.get_job("retrain") is not None
        ingestor._retrain()  # what the cron trigger runs
        jobs = c.get("/jobs").json()
        assert len(jobs) == 1 and jobs[0]["spec"]["activate"] == "if_better"
        assert jobs[0]["spec"]["exchange"] == "synthetic"


def test_imported_markets_are_listed_as_not_scheduled(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path, markets=["synthetic:BTC-USD"]))) as c:
        csv = "time,price,amount\n100,10.5,1\n101,10.6,2\n105,10.4,0.5\n"
        assert (
            c.post(
                "/markets/kraken/ETH-USD/import", content=csv, headers={"content-type": "text/csv"}
            ).status_code
            == 200
        )
        configured, imported = c.get("/markets").json()

        def who(m: dict) -> tuple:
            return m["exchange"], m["symbol"], m["scheduled"]

        assert who(configured) == ("synthetic", "BTC-USD", True)
        assert who(imported) == ("kraken", "ETH-USD", False)
        assert imported["ticks_stored"] == 3 and imported["last_tick_time"] == 105
        assert imported["lag_s"] > 0 and imported["ingesting"] is False and imported["next_run"] is None
        for pull_field in (
            "last_pull",
            "last_new_ticks",
            "last_error",
            "pulls",
            "failures",
            "consecutive_failures",
        ):
            assert imported[pull_field] is None, pull_field
        assert c.get("/info").json()["markets"] == [
            {"exchange": "synthetic", "symbol": "BTC-USD", "scheduled": True},
            {"exchange": "kraken", "symbol": "ETH-USD", "scheduled": False},
        ]
        # listed is not configured: a pull still names the setting to change
        r = c.post("/markets/kraken/ETH-USD/pull")
        assert r.status_code == 404 and "TICKCAST_MARKETS" in r.json()["detail"]


def test_latest_ticks_are_the_newest_oldest_first_and_a_predict_body_as_they_are(
    tmp_path: Path, trained: list[Path], ticks: TickArrays
) -> None:
    install_models(tmp_path, trained)
    with TestClient(create_app(make_settings(tmp_path))) as c:
        assert (
            c.post(
                "/markets/kraken/ETH-USD/import",
                content=csv_body(ticks[:500]),
                headers={"content-type": "text/csv"},
            ).status_code
            == 200
        )
        r = c.get("/markets/kraken/ETH-USD/ticks", params={"latest": 40})
        got = r.json()
        assert got["count"] == 40 and [t["time"] for t in got["ticks"]] == ticks.time[460:500].tolist()
        assert [t["price"] for t in got["ticks"]] == ticks.price[460:500].tolist()
        p = c.post("/predict", content=r.content, headers={"content-type": "application/json"})
        assert p.status_code == 200, p.text
        same = c.post("/predict", json=body(ticks[:500], n=40)).json()
        assert p.json() | {"model_age_s": 0} == same | {"model_age_s": 0}  # the age moves with the clock
        assert p.json()["as_of"] == ticks.time[499]
        csv = c.get("/markets/kraken/ETH-USD/ticks", params={"latest": 2, "format": "csv"}).text
        assert [float(line.split(",")[0]) for line in csv.splitlines()[1:]] == ticks.time[498:500].tolist()
        # more than stored: all of them; another market: none
        assert c.get("/markets/kraken/ETH-USD/ticks", params={"latest": 100_000}).json()["count"] == 500
        assert c.get("/markets/kraken/XRP-USD/ticks", params={"latest": 5}).json()["count"] == 0
        # the extra keys are accepted by /predict, nothing else is
        bad = {**got, "colour": "red"}
        assert c.post("/predict", json=bad).status_code == 422


@pytest.mark.parametrize(
    "query", [{"latest": 5, "start": 1}, {"latest": 5, "end": 1e10}, {"latest": 5, "limit": 5}]
)
def test_latest_does_not_combine_with_a_range(tmp_path: Path, query: dict) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as c:
        r = c.get("/markets/synthetic/BTC-USD/ticks", params=query)
        assert r.status_code == 422
        [err] = r.json()["detail"]
        assert err["loc"] == ["query", "latest"] and "one or the other" in err["msg"]
        assert c.get("/markets/synthetic/BTC-USD/ticks", params={"latest": 0}).status_code == 422


@pytest.mark.sqlite_only  # files in the models folder or beside the SQLite file, as only the default has
def test_a_csv_over_the_body_limit_is_413_pointing_to_the_command_that_stores_it(
    tmp_path: Path, ticks: TickArrays
) -> None:
    from app.cli import fetch

    big = tmp_path / "big.csv"
    big.write_bytes(csv_body(ticks[:400]))
    assert big.stat().st_size > 4096
    settings = make_settings(tmp_path, max_body_bytes=4096)
    with TestClient(create_app(settings)) as c:
        r = c.post(
            "/markets/kraken/ETH-USD/import", content=big.read_bytes(), headers={"content-type": "text/csv"}
        )
        assert r.status_code == 413
        detail = r.json()["detail"]
        assert "tickcast fetch csv ETH-USD --file FILE" in detail and "4096 bytes" in detail
        assert [m["exchange"] for m in c.get("/markets").json()] == ["synthetic"]  # nothing was stored
        # /predict's 413 keeps its own advice
        r = c.post("/predict", json=body(ticks, n=400))
        assert r.status_code == 413 and "send fewer ticks" in r.json()["detail"]
    # the advice works: the command stores the file in the service's store
    assert (
        fetch.main(["csv", "ETH-USD", "--file", str(big), "--store", str(settings.store_path), "--quiet"])
        == 0
    )
    with TestClient(create_app(settings)) as c:
        listed = {(m["exchange"], m["symbol"]): m for m in c.get("/markets").json()}
        assert listed[("csv", "ETH-USD")]["ticks_stored"] == 400
        assert listed[("csv", "ETH-USD")]["scheduled"] is False
