"""Live evaluation through the real app: a fake Binance whose next trades the test reveals, models
of known quality written as real checkpoints, and the offline figures live ones must equal.

A test builds the trades it wants (`trades`: each price move chosen, timestamps shared at
random), reveals a prefix to the exchange, pulls (POST /markets/binance/BTC-USD/pull, the same
path a scheduled pull takes) and runs one live scoring pass (`services.live.work()`). The app
runs with `QUIET`: the live loop wakes only when a pull stored ticks (it then scores what the
test's own pass would, under the same lock) and never refreshes the metrics on its own, so the
test decides when they are recomputed (`services.live.refresh()`).
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app.database import is_postgres
from app.main import create_app
from app.market.sources import synthetic
from app.market.ticks import TickArrays
from app.ml import checkpoint, training
from app.ml.config import TrainConfig
from app.ml.meta import ModelMeta
from app.services.live.service import LiveEval
from tests.helpers.apps import settings_for
from tests.helpers.binance import BinanceFake
from tests.helpers.fake_exchange import FakeExchange

EX, SYM = "binance", "BTC-USD"
MARKET_PATH = f"/markets/{EX}/{SYM}"
# the loop sleeps until a pull stores ticks; metrics, promotion and calibration wait for the test
QUIET: dict[str, Any] = {"live_poll_s": 60.0, "live_metrics_s": 3600.0, "ingest": False}
BAD_CALIBRATOR = {"kind": "platt", "a": 1.0, "b": 3.0}  # says "rise" at ~95% whatever happens


def train_tiny(folder: Path, seed: int = 0) -> Path:
    """A tiny CNN trained on synthetic ticks (a second or two on one thread: two threads fighting
    over busy cores are many times slower), saved as a checkpoint in `folder`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = training.fit(
            synthetic.generate(1600, seed=5),
            TrainConfig(
                arch="CNN",
                hidden_size=8,
                num_layers=1,
                num_epochs=1,
                batch_size=256,
                seq_len=16,
                seed=seed,
                device="cpu",
            ),
        )
    finally:
        torch.set_num_threads(before)
    return res.save(folder)


def craft(
    src: Path, folder: Path, model_id: str, calibrator: dict[str, Any] | None = None, **changes: Any
) -> str:
    """A checkpoint under a fresh id with `src`'s weights and, if given, another calibrator or
    other metadata `changes`, written as training writes one (checkpoint.save, typed metadata)."""
    payload = checkpoint.read(src)
    meta = ModelMeta.from_dict(payload["meta"])
    meta = dataclasses.replace(meta, id=model_id, created_at=checkpoint.utc_now_iso(), **changes)
    if calibrator is not None:
        meta = dataclasses.replace(meta, calibrator=dict(calibrator), logit_offset=0.0)
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint.save(folder / f"{model_id}.pt", payload["state_dict"], meta)
    return model_id


def moves(n: int, p_up: float = 0.5, *, flat: float = 0.15, seed: int = 0) -> list[int]:
    """n price moves: 0 (unchanged) with probability `flat`, else +1 with probability p_up, -1."""
    rng = random.Random(seed)
    return [0 if rng.random() < flat else (1 if rng.random() < p_up else -1) for _ in range(n)]


def trades(
    steps: Sequence[int],
    *,
    seed: int = 0,
    start_s: float | None = None,
    pauses: dict[int, float] | None = None,
) -> list[dict[str, Any]]:
    """Binance aggTrades, one per move (the first trade's move is ignored): the price goes up,
    down or stays by each step; a third of trades share the previous one's timestamp; trade k
    comes `pauses[k]` seconds after trade k-1 when given. They start `start_s` (default: 50
    minutes ago, inside a first pull's one-hour window) and last about 0.3 s each."""
    rng = random.Random(seed)
    t = int(((time.time() - 3000) if start_s is None else start_s) * 1000)
    price, out = 30_000.0, []
    for k, step in enumerate(steps):
        if k:
            t += int(1000 * pauses[k]) if pauses and k in pauses else rng.choice([0, 0, 300, 600])
            price *= 1 + step * rng.uniform(3e-4, 6e-4)  # at least $9: the move survives 2 decimals
        out.append(
            {
                "a": 1000 + k,
                "p": f"{price:.2f}",
                "q": f"{rng.uniform(0.001, 1):.5f}",
                "f": 5000 + k,
                "l": 5000 + k,
                "T": t,
                "m": rng.random() < 0.5,
                "M": True,
            }
        )
    return out


def shared_cut(ts: list[dict[str, Any]], near: int) -> int:
    """The first k >= near where trades k-1 and k share a timestamp: revealing ts[:k] leaves a
    timestamp half stored, its other fills coming with the next pull."""
    return next(k for k in range(near, len(ts)) if ts[k]["T"] == ts[k - 1]["T"])


@dataclasses.dataclass
class Feed:
    """The fake exchange's trades: a test reveals them a prefix at a time."""

    trades: list[dict[str, Any]]
    fake: BinanceFake = dataclasses.field(default_factory=lambda: BinanceFake([]))

    def show(self, n: int) -> None:
        self.fake.trades = self.trades[:n]


@contextmanager
def exchange(ts: list[dict[str, Any]]) -> Iterator[tuple[Feed, str]]:
    """A Feed over `ts` (nothing shown yet) served on 127.0.0.1; yields it and its URL."""
    feed = Feed(ts)
    with FakeExchange(feed.fake) as fx:
        yield feed, fx.url


@contextmanager
def app(tmp: Path, url: str, **over: Any) -> Iterator[TestClient]:
    """The real app over files in `tmp`, pulling binance:BTC-USD from `url` when told."""
    with TestClient(create_app(settings_for(tmp, url, **{**QUIET, **over}))) as c:
        yield c


def log_in(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Apps built from now on keep their prediction log at `database` (the `database` fixture's
    target): nothing to do for a SQLite file (the app's own beside its ticks); for PostgreSQL, the
    log there while ticks, jobs and models stay in the app's SQLite file and folder."""
    if not is_postgres(database):
        return
    from app.services import container
    from app.services.live.pg import PgPredictionLog

    monkeypatch.setattr(container, "open_prediction_log", lambda target: PgPredictionLog(database))


def live(c: TestClient) -> LiveEval:
    live_eval: LiveEval = c.app.state.services.live  # type: ignore[attr-defined]
    return live_eval


def serving(c: TestClient) -> checkpoint.Model:
    """The model /predict serves now (its calibrator included)."""
    model = live(c).predictor.model
    assert model is not None
    return model


def step(c: TestClient, feed: Feed, upto: int) -> None:
    """Reveal trades[:upto], pull them as a scheduled pull would, and run one live scoring pass."""
    feed.show(upto)
    r = c.post(f"{MARKET_PATH}/pull")
    assert r.status_code == 200, r.text
    live(c).work()


def stored(c: TestClient) -> TickArrays:
    """The market's stored ticks in store order (time, then arrival), as GET .../ticks gives them."""
    r = c.get(f"{MARKET_PATH}/ticks", params={"limit": 100_000})
    assert r.status_code == 200, r.text
    ticks = r.json()["ticks"]
    return TickArrays(
        np.array([t["time"] for t in ticks], dtype=np.float64),
        np.array([t["price"] for t in ticks], dtype=np.float64),
        np.array([t["amount"] for t in ticks], dtype=np.float64),
    )


def logged(c: TestClient, **params: Any) -> list[dict[str, Any]]:
    """GET /predictions (every row unless `limit` says otherwise), checked to be complete."""
    r = c.get("/predictions", params={"limit": 100_000, **params})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["truncated"] is False or "limit" in params
    rows: list[dict[str, Any]] = body["predictions"]
    return rows


def offline(model: checkpoint.Model, ticks: TickArrays, idx: np.ndarray) -> np.ndarray:
    """The probabilities `model` gives on the windows ending at ticks `idx` of `ticks`."""
    first = int(idx.min())
    windows = model.spec.windows_ending_at(ticks, first)[idx - first]
    return model.proba(windows)


def rises(ticks: TickArrays, idx: np.ndarray, horizon: int = 1) -> list[int | None]:
    """The outcome of a prediction at each tick of `idx`: did the price `horizon` stored ticks
    later rise (None while that tick is not stored)?"""
    p, n = ticks.price, len(ticks)
    return [int(p[i + horizon] > p[i]) if i + horizon < n else None for i in idx.tolist()]
