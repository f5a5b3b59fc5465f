"""First start with nothing, and schemathesis over the OpenAPI schema of a live server."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.services import bootstrap
from tests.helpers.apps import install_models, make_settings
from tests.helpers.bodies import body
from tests.helpers.servers import live_server


def retry_in(text: str) -> int:
    """The delay a 503's text asks for, in seconds."""
    m = re.search(r"retry in (\d+) s\b", text)
    assert m is not None, text
    return int(m.group(1))


def test_first_start_bootstraps_a_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="app.services.bootstrap")
    monkeypatch.setattr(bootstrap, "POLL_S", 0.05)  # sees every epoch of this small job
    settings = make_settings(tmp_path, bootstrap=True, bootstrap_ticks=20_000)
    with TestClient(create_app(settings)) as c:
        r = c.get("/ready")
        assert r.status_code == 503 and "training" in r.json()["reason"]
        assert retry_in(r.json()["reason"]) == int(r.headers["Retry-After"])  # the text agrees
        ticks = c.app.state.services.store.latest("synthetic", "BTC-USD", 64)  # 49 for the default TickNet
        assert len(ticks) == 64 and abs(ticks.time[-1] - time.time()) < 120
        p = c.post("/predict", json=body(ticks))
        assert p.status_code == 503 and "training" in p.json()["detail"]
        assert retry_in(p.json()["detail"]) == int(p.headers["Retry-After"])
        deadline = time.monotonic() + 90
        while c.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, c.get("/jobs").json()
            time.sleep(0.3)
        assert c.post("/predict", json=body(ticks)).status_code == 200
        assert c.get("/predict/synthetic/BTC-USD").status_code == 200
    # the first start said what it was doing, step by step
    said = [r.getMessage() for r in caplog.records if r.name == "app.services.bootstrap"]
    assert said[0].startswith("bootstrap: no model yet; storing about 20,000 ticks")
    assert re.fullmatch(r"bootstrap: stored [\d,]+ synthetic ticks in [\d.]+ s", said[1])
    assert re.fullmatch(
        r"bootstrap: training a first model in job [0-9a-f]{12} \(TickNet, 8 epochs\)", said[2]
    )
    assert any(re.search(r": epoch \d/8, batch \d+/\d+, loss [\d.]+$", m) for m in said), said
    for epoch in (1, 2, 3):  # early stopping (patience 3) cannot end it before epoch 4
        assert any(re.search(rf": epoch {epoch}/8 done, validation AUC 0\.\d{{3}}$", m) for m in said), said
    assert re.fullmatch(
        r"bootstrap: the first model ticknet-\S+ is active after \d+ s, validation AUC 0\.\d{3}; "
        r"/ready answers 200",
        said[-1],
    )
    # a second start finds the model and queues nothing new
    with TestClient(create_app(settings)) as c:
        assert c.get("/ready").status_code == 200
        assert len(c.get("/jobs").json()) == 1


@pytest.fixture
def live_url(tmp_path: Path, trained) -> Iterator[str]:
    install_models(tmp_path, trained)
    with live_server(create_app(make_settings(tmp_path, api_key="k"))) as url:
        yield url


def test_schemathesis_finds_no_server_errors(live_url: str) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(f"{live_url}/openapi.json")
    failures: list[str] = []
    calls = [0]
    ops = list(schema.get_all_operations())
    for op in ops:
        operation = op.ok()
        if operation.path.startswith("/stream/"):
            continue  # an event stream never ends, so a read-to-the-end client cannot call it;
            # its validation and refusals are tested in test_stream.py
        strategy = operation.as_strategy()

        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def run(case) -> None:
            response = case.call(base_url=live_url, timeout=30)
            calls[0] += 1
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:200]}"
                )

        given(strategy)(run)()
    assert failures == []
    assert len(ops) >= 11 and calls[0] >= 5 * len(ops)
