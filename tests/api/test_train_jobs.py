"""/train and /jobs through the real app: real worker processes, small jobs."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from app.main import create_app
from app.market.sources import synthetic
from tests.helpers.apps import install_models, make_settings
from tests.helpers.bodies import body
from tests.helpers.jobs_api import LONG, SMALL, seed_store, wait


def test_train_job_registers_activates_and_serves(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as c:
        seed_store(c)
        r = c.post(
            "/train",
            json={"exchange": "synthetic", "symbol": "BTC-USD", "config": SMALL, "activate": "always"},
        )
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["status"] in ("queued", "running")
        done = wait(c, job["id"], {"succeeded", "failed"})
        assert done["status"] == "succeeded", done
        mid = done["result"]["model_id"]
        assert done["result"]["activated"] is True
        # 4,000 ticks train, but the job says how little that is
        assert done["result"]["warnings"][0].startswith("few ticks: 3,967 windows")
        assert [m["id"] for m in c.get("/models").json()] == [mid]
        deadline = time.monotonic() + 10
        while c.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        ticks = c.app.state.services.store.latest("synthetic", "BTC-USD", 64)
        p = c.post("/predict", json=body(ticks))
        assert p.status_code == 200 and p.json()["model_id"] == mid
        assert job["id"] in [j["id"] for j in c.get("/jobs").json()]


def test_never_policy_keeps_the_active_model(tmp_path: Path, trained) -> None:
    ids = install_models(tmp_path, trained)
    with TestClient(create_app(make_settings(tmp_path))) as c:
        seed_store(c)
        r = c.post("/train", json={"config": SMALL, "activate": "never"})
        done = wait(c, r.json()["id"], {"succeeded", "failed"})
        assert done["status"] == "succeeded" and done["result"]["activated"] is False
        assert c.get("/ready").json()["model_id"] == ids[0]
        assert len(c.get("/models").json()) == 3


def test_progress_is_visible_and_cancel_stops_it(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as c:
        seed_store(c, 20000)
        job = c.post("/train", json={"config": LONG, "activate": "never"}).json()
        deadline = time.monotonic() + 60
        progress = None
        while time.monotonic() < deadline:
            j = c.get(f"/jobs/{job['id']}").json()
            if j["status"] == "running" and j["progress"]:
                progress = j["progress"]
                break
            time.sleep(0.2)
        assert progress is not None and progress["epoch"] >= 1 and "loss" in progress
        # /predict-side endpoints stay responsive while it trains
        t0 = time.monotonic()
        assert c.get("/health").status_code == 200
        assert time.monotonic() - t0 < 2
        t0 = time.monotonic()
        r = c.delete(f"/jobs/{job['id']}")
        assert r.status_code == 200
        done = wait(c, job["id"], {"cancelled", "failed", "succeeded"}, timeout=20)
        assert done["status"] == "cancelled"
        assert time.monotonic() - t0 < 15
        assert c.get("/models").json() == []
        assert c.delete(f"/jobs/{job['id']}").status_code == 409


def test_restart_marks_a_running_job_interrupted(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with TestClient(create_app(settings)) as c:
        seed_store(c, 20000)
        job = c.post("/train", json={"config": LONG, "activate": "never"}).json()
        wait(c, job["id"], {"running"})
    with TestClient(create_app(settings)) as c:
        j = c.get(f"/jobs/{job['id']}").json()
        assert j["status"] == "interrupted" and j["error"]


def test_bad_train_requests_change_nothing(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as c:
        bad = [
            {"config": {"arch": "Transformer"}},
            {"config": {"hidden_size": 0}},
            {"config": {"num_epochs": -1}},
            {"config": {"lr": "fast"}},
            {"config": {"train_split": 0.9, "val_split": 0.3}},
            {"start": 10, "end": 5},
            {"exchange": "../etc"},
            {"activate": "sometimes"},
            {"surprise": 1},
        ]
        for b in bad:
            r = c.post("/train", json=b)
            assert r.status_code == 422, (b, r.text)
        assert c.get("/jobs").json() == []
        assert c.get("/jobs/ffffffff").status_code == 404
        assert c.get("/jobs/..%2Fx").status_code == 404
        assert c.delete("/jobs/ffffffff").status_code == 404


def test_a_market_without_enough_ticks_is_refused_before_anything_is_queued(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as c:
        c.app.state.services.store.insert("bitstamp", "BTC-USD", synthetic.generate(900, seed=5))
        for market, words in (
            ("kraken", "kraken:BTC-USD has 0 ticks"),
            ("bitstamp", "bitstamp:BTC-USD has 900 ticks"),
        ):
            r = c.post("/train", json={"exchange": market, "symbol": "BTC-USD", "config": SMALL})
            assert r.status_code == 422, r.text
            (problem,) = r.json()["detail"]
            assert problem["loc"] == ["body", "symbol"] and problem["msg"].startswith(words)
            assert "at least 1,000 windows, i.e. 1,033 ticks at seq_len 16" in problem["msg"]
            assert f"POST /markets/{market}/BTC-USD/pull" in problem["msg"]
        # a range counts the ticks inside it
        r = c.post("/train", json={"exchange": "bitstamp", "symbol": "BTC-USD", "start": 0, "end": 1})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "start"]
        assert "widen start and end" in r.json()["detail"][0]["msg"]
        assert c.get("/jobs").json() == [] and c.app.state.services.jobs.counts()["queued"] == 0


def test_api_key_guards_mutations_only(tmp_path: Path, trained, ticks) -> None:
    ids = install_models(tmp_path, trained)
    with TestClient(create_app(make_settings(tmp_path, api_key="s3cret"))) as c:
        for method, path in (
            ("post", "/train"),
            ("post", f"/models/{ids[1]}/activate"),
            ("delete", f"/models/{ids[1]}"),
            ("delete", "/jobs/ffffffff"),
        ):
            for headers in ({}, {"X-API-Key": "wrong"}):
                extra = {"json": {}} if path == "/train" else {}
                r = getattr(c, method)(path, headers=headers, **extra)
                assert r.status_code == 401, (method, path, headers, r.status_code)
        assert c.get("/models").status_code == 200
        assert c.post("/predict", json=body(ticks)).status_code == 200
        assert len(c.get("/models").json()) == 2
        r = c.post(f"/models/{ids[1]}/activate", headers={"X-API-Key": "s3cret"})
        assert r.status_code == 200
        assert "s3cret" not in c.get("/metrics").text
