"""Freshness in every answer: how old the model is and what it learnt from, how old the market's
stored ticks are and how long they took to arrive, and a 503 rather than a stale prediction."""

from __future__ import annotations

import os
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from app.market.ticks import TickArrays
from app.ml import checkpoint
from tests.helpers import pg
from tests.helpers.apps import app_store, install_models, settings_for
from tests.helpers.binance import BinanceFake, recent_trades
from tests.helpers.bodies import body
from tests.helpers.fake_exchange import FakeExchange
from tests.helpers.servers import live_server, wait_for
from tests.helpers.sse import EventStream

BINANCE = "/predict/binance/BTC-USD"
PROVENANCE = ("calibrator_version", "model_age_s", "train_start", "train_end")


def file_meta(path: Path) -> dict[str, Any]:
    meta: dict[str, Any] = checkpoint.read(path)["meta"]
    return meta


def assert_provenance(answer: dict[str, Any], meta: dict[str, Any], before: float, after: float) -> None:
    """The model's age as of the answer (between the request's start and end) and its data range,
    both as the checkpoint file says them."""
    created = datetime.fromisoformat(meta["created_at"]).timestamp()
    assert before - created <= answer["model_age_s"] <= after - created
    assert answer["model_age_s"] > 0
    assert answer["train_start"] == meta["data"]["start_time"]
    assert answer["train_end"] == meta["data"]["end_time"]
    assert answer["train_start"] < answer["train_end"]
    assert answer["calibrator_version"] == 0


def store_ticks(tmp: Path, exchange: str, symbol: str, ticks: TickArrays) -> None:
    with app_store(tmp) as store:
        store.insert(exchange, symbol, ticks)


def test_post_predict_says_how_old_the_model_is_and_what_it_learnt_from(
    client: TestClient, trained: list[Path], ticks: TickArrays
) -> None:
    meta = file_meta(trained[0])
    before = time.time()
    r = client.post("/predict", json=body(ticks))
    after = time.time()
    assert r.status_code == 200, r.text
    out = r.json()
    assert list(out) == ["probability", "decision", "threshold", "model_id", *PROVENANCE, "as_of"]
    assert_provenance(out, meta, before, after)

    # several windows: each prediction says the same of its model; another model, its own
    r = client.post("/predict", json={"windows": [body(ticks)["ticks"]] * 3, "model_id": trained[1].stem})
    assert r.status_code == 200, r.text
    other = file_meta(trained[1])
    for p in r.json()["predictions"]:
        assert_provenance(p, other, before, time.time())
    # the age grows with the clock: it is the answer's, not the model's load time
    time.sleep(1.1)
    later = client.post("/predict", json=body(ticks)).json()
    assert later["model_age_s"] >= out["model_age_s"] + 1.0


@pytest.mark.sqlite_only  # files in the models folder or beside the SQLite file, as only the default has
def test_a_model_whose_file_does_not_say_answers_nulls(
    client: TestClient, trained: list[Path], ticks: TickArrays
) -> None:
    payload = torch.load(trained[0], weights_only=True)
    meta = {**payload["meta"], "created_at": "last tuesday", "data": {"start_time": "2018", "end_time": None}}
    checkpoint.save(client.app.state.services.registry.folder / "vague.pt", payload["state_dict"], meta)
    r = client.post("/predict", json=body(ticks, model_id="vague"))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model_id"] == "vague" and out["calibrator_version"] == 0
    assert out["model_age_s"] is None and out["train_start"] is None and out["train_end"] is None


def test_a_market_prediction_says_how_old_its_ticks_are_and_how_long_they_took(
    tmp_path: Path, trained: list[Path], ticks: TickArrays
) -> None:
    install_models(tmp_path, trained)
    trades = recent_trades(80)  # half an hour old: what the pull stores lags by that much
    newest = trades[-1]["T"] / 1000
    store_ticks(tmp_path, "kraken", "ETH-USD", ticks[:200])  # imported: never pulled here
    with FakeExchange(BinanceFake(trades)) as fx:
        with TestClient(create_app(settings_for(tmp_path, fx.url, ingest=False))) as c:
            pulled_from = time.time()
            assert c.post("/markets/binance/BTC-USD/pull").json()["new_ticks"] == 80
            pulled_by = time.time()
            before = time.time()
            r = c.get(BINANCE)
            after = time.time()
            assert r.status_code == 200, r.text
            out = r.json()
            assert list(out)[-3:] == ["as_of", "data_age_s", "ingestion_lag_s"]
            assert out["as_of"] == newest
            assert before - newest <= out["data_age_s"] <= after - newest
            assert pulled_from - newest <= out["ingestion_lag_s"] <= pulled_by - newest
            assert_provenance(out, file_meta(trained[0]), before, after)

            r = c.get("/predict/kraken/ETH-USD")
            assert r.status_code == 200, r.text
            imported = r.json()
            assert imported["ingestion_lag_s"] is None  # not a market this service ingests
            assert imported["data_age_s"] == pytest.approx(time.time() - float(ticks.time[199]), abs=5)

            spec = c.get("/openapi.json").json()["paths"]["/predict/{exchange}/{symbol}"]["get"]
            ok = spec["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
            assert ok.endswith("/MarketPredictionOut")
            assert "TICKCAST_MAX_STALENESS_S" in spec["responses"]["503"]["description"]
            assert "Retry-After" in spec["responses"]["503"]["headers"]


def test_a_stale_market_gets_503_and_a_historical_one_only_with_its_own_limit(
    tmp_path: Path, trained: list[Path], ticks: TickArrays
) -> None:
    install_models(tmp_path, trained)
    trades = recent_trades(80)
    newest = trades[-1]["T"] / 1000
    store_ticks(tmp_path, "kraken", "ETH-USD", ticks[:200])  # historical: years old
    store_ticks(tmp_path, "kraken", "XBT-EUR", ticks[:200])  # historical, with its own limit
    limits = {"*": 60, "kraken:XBT-EUR": 3600}
    with FakeExchange(BinanceFake(trades)) as fx:
        settings = settings_for(tmp_path, fx.url, max_staleness_s=limits)  # pulls every 0.3 s
        with TestClient(create_app(settings)) as c:
            wait_for(lambda: c.app.state.services.store.count("binance", "BTC-USD") == 80)
            before = time.time()
            r = c.get(BINANCE)
            after = time.time()
            assert r.status_code == 503, r.text
            assert r.headers["Retry-After"] == "1"  # the pull interval, rounded up
            detail = r.json()["detail"]
            m = re.fullmatch(
                r"the newest stored tick of binance:BTC-USD is (\d+) s old, over the 60 s "
                r"TICKCAST_MAX_STALENESS_S allows: a prediction from it would be stale; GET /markets "
                r"shows the market's ingestion status and last error \(a market that is not ingested "
                r"needs newer ticks imported\); retry in 1 s",
                detail,
            )
            assert m is not None, detail
            assert before - newest - 1 <= int(m.group(1)) <= after - newest + 1
            # POST /predict is not the store's: the same ticks in the body are answered
            assert c.post("/predict", json=body(ticks)).status_code == 200

            # a market only imported is never refused by the "*" limit, however old...
            r = c.get("/predict/kraken/ETH-USD")
            assert r.status_code == 200 and r.json()["data_age_s"] > 3600
            # ...unless it has its own entry
            r = c.get("/predict/kraken/XBT-EUR")
            assert r.status_code == 503 and r.headers["Retry-After"] == "1"
            assert "kraken:XBT-EUR" in r.json()["detail"] and "over the 3600 s" in r.json()["detail"]

    # a limit the market is within: answered, with its freshness (a new store: a pull that stores
    # nothing new leaves the lag unknown)
    fresh = tmp_path / "within"
    if os.environ.get("TICKCAST_DATABASE_URL"):  # the API tests' PostgreSQL backend: a new store there too
        pg.reset(os.environ["TICKCAST_DATABASE_URL"])
    install_models(fresh, trained)
    limits = {"*": 60, "binance:BTC-USD": 7200}
    with FakeExchange(BinanceFake(trades)) as fx:
        with TestClient(create_app(settings_for(fresh, fx.url, max_staleness_s=limits))) as c:
            wait_for(lambda: c.app.state.services.ingestor.ingestion_lag("binance", "BTC-USD") is not None)
            r = c.get(BINANCE)
            assert r.status_code == 200, r.text
            assert 1800 - 60 < r.json()["data_age_s"] < 7200
            assert r.json()["ingestion_lag_s"] is not None


def test_stream_events_carry_the_models_provenance_and_the_markets_freshness(
    tmp_path: Path, trained: list[Path]
) -> None:
    install_models(tmp_path, trained)
    trades = recent_trades(80)
    newest = trades[-1]["T"] / 1000
    with FakeExchange(BinanceFake(trades)) as fx:
        settings = settings_for(tmp_path, fx.url, ingest=False, stream_poll_s=60)
        with live_server(create_app(settings)) as url:
            assert httpx.post(f"{url}/markets/binance/BTC-USD/pull").json()["new_ticks"] == 80
            market = httpx.get(f"{url}{BINANCE}").json()
            before = time.time()
            with EventStream(f"{url}/stream/binance/BTC-USD?backlog=40") as s:
                got = [e.json() for e in s.take(40)]
            after = time.time()
    scored = [e for e in got if e["probability"] is not None]
    assert len(scored) >= 20  # those with a full window before them
    for e in got:
        assert list(e)[-2:] == ["data_age_s", "ingestion_lag_s"] and "as_of" not in e
        # one update brought them all: the same freshness, the ingestor's lag
        assert before - newest <= e["data_age_s"] <= after - newest
        assert e["data_age_s"] == got[0]["data_age_s"]
        assert e["ingestion_lag_s"] == market["ingestion_lag_s"] is not None
    for e in scored:
        assert_provenance(e, file_meta(trained[0]), before, after)
