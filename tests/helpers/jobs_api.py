"""Training jobs through the real app's /train and /jobs, and waiting on them."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

from app.market.sources import synthetic
from tests.helpers.jobs import SMALL

__all__ = ["LONG", "SMALL", "seed_store", "wait"]

LONG = {"arch": "LSTM", "hidden_size": 32, "num_layers": 2, "num_epochs": 50, "batch_size": 32, "patience": 0}


def wait(c: TestClient, job_id: str, until: set[str], timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = c.get(f"/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached {until}: {job}")


def seed_store(c: TestClient, n: int = 4000) -> None:
    """`n` synthetic BTC-USD ticks straight into the app's store (a job needs ticks to train on)."""
    c.app.state.services.store.insert("synthetic", "BTC-USD", synthetic.generate(n, seed=5))
