"""What a model serves is what it was evaluated on: the calibrated probability, through the real
app, for the default TickNet, an event-target model, a model trained on two markets at once, and
a checkpoint written before calibrators existed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from app.market.sources import synthetic
from app.market.ticks import TickArrays
from app.ml import checkpoint, evaluation, features, training
from tests.helpers.apps import make_settings
from tests.helpers.bodies import body

SMALL = {"hidden_size": 8, "bins": 8, "num_epochs": 1, "batch_size": 256, "seq_len": 16, "device": "cpu"}


@pytest.fixture(scope="module")
def market() -> TickArrays:
    return synthetic.generate(6000, seed=4)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, market: TickArrays) -> dict[str, Path]:
    """A TickNet on the tick target, one on the event target, and one trained on two markets."""
    folder = tmp_path_factory.mktemp("models")
    other = synthetic.generate(5000, seed=9)
    return {
        "tick": training.fit(market, training.TrainConfig(**SMALL)).save(folder),
        "event": training.fit(market, training.TrainConfig(**SMALL, target="event")).save(folder),
        "two": training.fit([market, other], training.TrainConfig(**SMALL, seed=1)).save(folder),
    }


def serve(tmp: Path, model: Path) -> TestClient:
    folder = tmp / "models"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / model.name).write_bytes(model.read_bytes())
    (folder / "ACTIVE").write_text(model.stem)
    return TestClient(create_app(make_settings(tmp)))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[object]:
    clients: list[TestClient] = []

    def start(model: Path) -> TestClient:
        c = serve(tmp_path / str(len(clients)), model)
        clients.append(c.__enter__())
        return c

    yield start
    for c in clients:
        c.__exit__(None, None, None)


def offline(model: checkpoint.Model, ticks: TickArrays) -> tuple[float, float]:
    """The calibrated probability of the window ending at the last tick, and the raw sigmoid."""
    window = model.spec.last_window(ticks)[None]
    raw = 1.0 / (1.0 + np.exp(-model.logits(window)[0]))
    return float(model.proba(window)[0]), float(raw)


@pytest.mark.parametrize("kind", ["tick", "two"])
def test_a_served_probability_is_the_calibrated_offline_one(served, models, market, kind) -> None:
    model = checkpoint.load(models[kind])
    c = served(models[kind])
    for end in (1000, 3000, 6000):
        r = c.post("/predict", json=body(market[:end]))
        assert r.status_code == 200, r.text
        calibrated, raw = offline(model, market[:end])
        assert r.json()["probability"] == pytest.approx(calibrated, abs=1e-6)
        assert abs(calibrated - raw) > 1e-4  # the calibrator is doing something, and it is applied
        assert r.json()["threshold"] == model.meta.threshold
    # and the offline scorer (evaluate, training's metrics) says the same for the same window
    data = evaluation.dataset_for(model, market, whole=True)
    last = data.split.part("test")[-1:]
    served_p = c.post("/predict", json=body(market[: len(market) - 1])).json()["probability"]
    assert evaluation.model_probs(model, data, last)[0] == pytest.approx(served_p, abs=1e-6)


def test_an_event_model_is_served_on_merged_ticks(served, models, market, tmp_path: Path) -> None:
    model = checkpoint.load(models["event"])
    assert model.spec.target == "event" and "log_fills" in model.spec.names
    c = served(models["event"])
    ticks = market[:3000]
    r = c.post("/predict", json=body(ticks, n=400))
    assert r.status_code == 200, r.text
    assert r.json()["probability"] == pytest.approx(offline(model, ticks[-400:])[0], abs=1e-6)
    # 49 ticks are too few when they share timestamps: the 422 says what the model counts
    few = c.post("/predict", json=body(ticks, n=model.spec.min_ticks))
    if len(np.unique(ticks.time[-model.spec.min_ticks :])) < model.spec.min_ticks:
        assert few.status_code == 422 and "distinct times" in few.text
    # from the store: the service reads back until it has enough events
    store = c.app.state.services.store
    store.insert("synthetic", "BTC-USD", ticks)
    stored = c.get("/predict/synthetic/BTC-USD")
    assert stored.status_code == 200, stored.text
    assert stored.json()["probability"] == pytest.approx(offline(model, ticks)[0], abs=1e-6)


def test_a_model_trained_on_two_markets_records_both(models) -> None:
    model = checkpoint.load(models["two"])
    assert model.meta.data["n_series"] == 2 and model.meta.data["n_ticks"] == 11_000
    split = model.meta.data["split"]
    assert split["train"] > 0.6 * (6000 + 5000 - 2 * (16 + 1 + 16)) - 10


def test_a_checkpoint_from_before_calibrators_is_served_as_it_was(served, market, tmp_path: Path) -> None:
    """A version 2 file (the six columns, a logit offset, no calibrator) serves
    sigmoid(logit + offset), exactly as the tickcast that wrote it did."""
    torch.manual_seed(0)
    seq_len = 16
    net = checkpoint.nets.build("CNN", n_features=6, seq_len=seq_len, hidden_size=8, num_layers=1)
    norm = features.Normalizer.fit(features.feature_matrix(market[:2000], features.LEGACY_FEATURES))
    model_id = "cnn-20261101-000000-abcdef"
    meta = {  # what tickcast wrote before calibrators: metadata version 2
        "id": model_id,
        "arch": "CNN",
        "hparams": {"hidden_size": 8, "num_layers": 1},
        "seq_len": seq_len,
        "horizon": 1,
        "features": list(features.LEGACY_FEATURES),
        "norm": norm.to_dict(),
        "logit_offset": -0.7,
        "threshold": 0.33,
        "metrics": {},
        "data": {},
        "meta_version": 2,
    }
    path = checkpoint.save(tmp_path / f"{model_id}.pt", net.state_dict(), meta)
    c = served(path)
    r = c.post("/predict", json=body(market[:1000], n=17))  # the ancestor's columns: L + 1 is enough
    assert r.status_code == 200, r.text
    window = torch.from_numpy(features.last_window(market[:1000], seq_len, norm)[None])
    with torch.no_grad():
        want = torch.sigmoid(net.eval()(window) - 0.7).item()
    assert r.json()["probability"] == pytest.approx(want, abs=1e-6)
    assert r.json()["threshold"] == 0.33
    loaded = checkpoint.load(path)
    assert loaded.meta.calibrator is None and loaded.spec.names == features.LEGACY_FEATURES
