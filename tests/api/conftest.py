"""Real apps over real files: a tiny trained model in a temporary models folder.

Fixtures only; the plain helpers the API tests share are in tests/helpers/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from app.market.sources import synthetic
from app.market.ticks import TickArrays
from app.ml import training
from tests.helpers.apps import install_models, make_settings

TINY = {
    "arch": "CNN",
    "hidden_size": 8,
    "num_layers": 1,
    "num_epochs": 1,
    "batch_size": 256,
    "seq_len": 16,
    "patience": 0,
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every API test runs on both backends, but those marked sqlite_only (what only a SQLite file
    has: its permissions, its own errors), which run once."""
    if "backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("sqlite_only") is None:
        metafunc.parametrize("backend", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture(autouse=True)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The backend of every app the test builds: on "postgresql", TICKCAST_DATABASE_URL names this
    run's database, emptied first, so ticks, jobs, models and the prediction log all live there
    (a models folder's checkpoints and ACTIVE are adopted by the empty database at start)."""
    kind: str = getattr(request, "param", "sqlite")
    if kind == "postgresql":
        monkeypatch.setenv("TICKCAST_DATABASE_URL", request.getfixturevalue("pg_url"))
    else:
        monkeypatch.delenv("TICKCAST_DATABASE_URL", raising=False)
    return kind


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ticks() -> TickArrays:
    return synthetic.generate(4000, seed=3)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, ticks: TickArrays) -> list[Path]:
    """Two small models (different seeds), saved once for the whole session."""
    folder = tmp_path_factory.mktemp("trained")
    paths = []
    for seed in (0, 1):
        res = training.fit(ticks, training.TrainConfig(**TINY, seed=seed, device="cpu"))
        paths.append(res.save(folder))
    return paths


@pytest.fixture
def client(tmp_path: Path, trained: list[Path]) -> Iterator[TestClient]:
    install_models(tmp_path, trained)
    with TestClient(create_app(make_settings(tmp_path))) as c:
        yield c
