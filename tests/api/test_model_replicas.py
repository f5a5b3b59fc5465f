"""Two replicas of the app on one PostgreSQL database: a model activated through one serves /predict
on the other within a second, while the other keeps answering every request."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from fastapi.testclient import TestClient

from app.main import create_app
from app.market.ticks import TickArrays
from app.services.pg_models import PgRegistry
from tests.helpers.apps import make_settings
from tests.helpers.bodies import body

SWAP_WITHIN_S = 1.0


def test_an_activation_on_one_replica_switches_the_others_predictions_within_a_second(
    tmp_path: Path, trained: list[Path], ticks: TickArrays, pg_url: str
) -> None:
    publisher = PgRegistry(tmp_path / "job" / "models", pg_url)  # a training worker on a third machine
    ids = [p.stem for p in trained]
    for p in trained:
        publisher.publish(p)
    publisher.activate(ids[0])
    publisher.close()
    answers: list[tuple[float, int, str]] = []  # (when, status, model id or the error)
    stop = threading.Event()
    one = create_app(make_settings(tmp_path / "one", database_url=pg_url))
    two = create_app(make_settings(tmp_path / "two", database_url=pg_url))
    with TestClient(one) as a, TestClient(two) as b:
        assert b.post("/predict", json=body(ticks)).json()["model_id"] == ids[0]

        def requests() -> None:
            while not stop.is_set():
                r = b.post("/predict", json=body(ticks))
                answers.append((time.monotonic(), r.status_code, r.json().get("model_id") or r.text))

        loop = threading.Thread(target=requests)
        loop.start()
        try:
            time.sleep(0.2)
            t0 = time.monotonic()
            r = a.post(f"/models/{ids[1]}/activate")
            assert r.status_code == 200 and r.json()["active"], r.text
            while not (answers and answers[-1][2] == ids[1]) and time.monotonic() - t0 < 3 * SWAP_WITHIN_S:
                time.sleep(0.005)
            time.sleep(0.1)
        finally:
            stop.set()
            loop.join()
        assert {m["id"] for m in b.get("/models").json() if m["active"]} == {ids[1]}
    assert all(status == 200 for _, status, _ in answers), [a for a in answers if a[1] != 200][:3]
    served = [mid for _, _, mid in answers]
    switch = served.index(ids[1])
    assert set(served[:switch]) == {ids[0]} and set(served[switch:]) == {ids[1]}
    took = answers[switch][0] - t0
    assert took < SWAP_WITHIN_S, f"the other replica served the new model after {took:.3f} s"
