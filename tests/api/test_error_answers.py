"""Domain errors as the client reads them: status, the whole detail, and Retry-After.

The services say what happened in domain words; what to do through this API (a route to
call, a setting to change) is the HTTP layer's to add (`app.api.errors`). These tests pin
the full answers, byte for byte, so that split never shows to a client.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.services import bootstrap
from app.services.jobs.manager import JobManager
from app.services.jobs.states import JobStatus
from app.services.jobs.store import JobRecord
from tests.helpers.apps import install_models, make_settings
from tests.helpers.bodies import body
from tests.helpers.jobs import SMALL

NO_MODEL_YET = (
    "no model is loaded yet: one may be training (see GET /jobs); otherwise train one with "
    "POST /train or activate one with POST /models/{id}/activate"
)


@pytest.fixture
def idle_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    """No job ever leaves the queue: the app's dispatcher waits forever."""

    async def idle(self: JobManager) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(JobManager, "_dispatch", idle)


def test_job_errors_answer_in_full(tmp_path: Path, idle_jobs: None) -> None:
    train = {"exchange": "synthetic", "symbol": "BTC-USD", "config": SMALL, "activate": "never"}
    with TestClient(create_app(make_settings(tmp_path, job_queue_max=1))) as c:
        queued = c.post("/train", json=train)
        assert queued.status_code == 202, queued.text
        job_id = queued.json()["id"]
        full = c.post("/train", json=train)
        assert full.status_code == 429 and full.headers["Retry-After"] == "30"
        assert full.json() == {
            "detail": "the training queue is full: 1 jobs wait for a worker (at most 1, "
            "TICKCAST_JOB_QUEUE_MAX); nothing was queued; retry in 30 s, or cancel a waiting job "
            "(DELETE /jobs/{id})"
        }
        for method in ("get", "delete"):
            r = getattr(c, method)("/jobs/ffffffffffff")
            assert r.status_code == 404
            assert r.json() == {"detail": "no job 'ffffffffffff'; GET /jobs lists the jobs"}
            r = getattr(c, method)("/jobs/xyz")
            assert r.status_code == 404
            assert r.json() == {"detail": "no job 'xyz'; job ids are 12 hex digits"}
        assert c.delete(f"/jobs/{job_id}").json()["status"] == "cancelled"
        again = c.delete(f"/jobs/{job_id}")
        assert again.status_code == 409 and "retry-after" not in again.headers
        assert again.json() == {"detail": f"job {job_id} is already cancelled"}


def test_too_few_ticks_to_train_answer_in_full(tmp_path: Path, idle_jobs: None) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as c:
        r = c.post("/train", json={"exchange": "kraken", "symbol": "BTC-USD", "config": SMALL})
        assert r.status_code == 422
        assert r.json() == {
            "detail": [
                {
                    "loc": ["body", "symbol"],
                    "msg": "kraken:BTC-USD has 0 ticks; training needs at least 1,000 windows, i.e. "
                    "1,033 ticks at seq_len 16, horizon 1 and 16 rows of history: pull ticks (POST "
                    "/markets/kraken/BTC-USD/pull, or `tickcast fetch kraken BTC-USD`) or import them "
                    "(POST /markets/kraken/BTC-USD/import)",
                    "type": "value_error",
                }
            ]
        }
        ranged = {"exchange": "bitstamp", "symbol": "BTC-USD", "start": 0, "end": 1, "config": SMALL}
        r = c.post("/train", json=ranged)
        assert r.status_code == 422
        assert r.json() == {
            "detail": [
                {
                    "loc": ["body", "start"],
                    "msg": "bitstamp:BTC-USD from 1970-01-01T00:00:00Z before 1970-01-01T00:00:01Z has 0 "
                    "ticks; training needs at least 1,000 windows, i.e. 1,033 ticks at seq_len 16, "
                    "horizon 1 and 16 rows of history: pull ticks (POST /markets/bitstamp/BTC-USD/pull, "
                    "or `tickcast fetch bitstamp BTC-USD`) or import them "
                    "(POST /markets/bitstamp/BTC-USD/import), or widen start and end",
                    "type": "value_error",
                }
            ]
        }
        assert c.get("/jobs").json() == []


def test_model_errors_answer_in_full(client: TestClient) -> None:
    for method, path in (
        ("get", "/models/cnn-nope"),
        ("post", "/models/cnn-nope/activate"),
        ("delete", "/models/cnn-nope"),
    ):
        r = getattr(client, method)(path)
        assert r.status_code == 404, (method, path)
        assert r.json() == {"detail": "no model 'cnn-nope'; GET /models lists the available ones"}


def _not_ready(c: TestClient, reason: str) -> None:
    """/ready and /predict both say `reason`, with a Retry-After of 10 s."""
    ready = c.get("/ready")
    assert ready.status_code == 503 and ready.headers["Retry-After"] == "10"
    assert ready.json() == {"status": "not ready", "reason": reason, "detail": reason}


def test_no_model_yet_answers_in_full(tmp_path: Path, ticks) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as c:
        _not_ready(c, NO_MODEL_YET)
        p = c.post("/predict", json=body(ticks))
        assert p.status_code == 503 and p.headers["Retry-After"] == "10"
        assert p.json() == {"detail": NO_MODEL_YET}
        predictor = c.app.state.services.predictor
        predictor.training_hint = bootstrap.hint("3f9c2a7d41b0", {"epoch": 2, "num_epochs": 3})
        _not_ready(
            c,
            "no model is loaded yet: a first model is training (job 3f9c2a7d41b0, epoch 2/3); retry in 10 s",
        )
        failed = JobRecord("3f9c2a7d41b0", JobStatus.FAILED, {}, None, None, "it broke", 0.0, 1.0, 2.0)
        bootstrap._finished(failed, predictor, 2.0)
        reason = (
            "no model is loaded yet: the first model's training ended failed (job 3f9c2a7d41b0: it "
            "broke); train one with POST /train or activate one with POST /models/{id}/activate"
        )
        _not_ready(c, reason)
        assert c.post("/predict", json=body(ticks)).json() == {"detail": reason}


@pytest.mark.sqlite_only  # files in the models folder or beside the SQLite file, as only the default has
def test_an_unloadable_active_model_answers_in_full(tmp_path: Path, ticks) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "bad-model.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "models" / "ACTIVE").write_text("bad-model\n")
    with TestClient(create_app(make_settings(tmp_path))) as c:
        r = c.get("/ready")
        assert r.status_code == 503 and r.headers["Retry-After"] == "10"
        reason = r.json()["reason"]
        assert reason.startswith("no model is loaded: the active model 'bad-model' cannot be loaded: ")
        assert reason.endswith(
            "; activate another with POST /models/{id}/activate (GET /models shows which can be "
            "loaded) or train one with POST /train"
        )
        assert r.json() == {"status": "not ready", "reason": reason, "detail": reason}
        p = c.post("/predict", json=body(ticks))
        assert p.status_code == 503 and p.headers["Retry-After"] == "10"
        assert p.json() == {"detail": reason}


def test_market_errors_answer_in_full(tmp_path: Path, trained) -> None:
    install_models(tmp_path, trained)
    with TestClient(create_app(make_settings(tmp_path))) as c:
        r = c.post("/markets/kraken/ETH-USD/pull")
        assert r.status_code == 404
        assert r.json() == {"detail": "kraken:ETH-USD is not a configured market; add it to TICKCAST_MARKETS"}
        r = c.get("/stream/kraken/ETH-USD")
        assert r.status_code == 404
        assert r.json() == {
            "detail": "kraken:ETH-USD is neither a configured market nor has stored ticks; add it to "
            "TICKCAST_MARKETS or import ticks"
        }
        c.app.state.services.feeds.max_clients = 0
        r = c.get("/stream/synthetic/BTC-USD")
        assert r.status_code == 503 and r.headers["Retry-After"] == "30"
        assert r.json() == {
            "detail": "0 streams are open, the most this service allows (TICKCAST_STREAM_MAX_CLIENTS); "
            "retry later"
        }
