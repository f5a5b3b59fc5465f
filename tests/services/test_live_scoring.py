"""Live scoring through the real app, fed by a fake Binance on 127.0.0.1 whose next trades each
test reveals: which ticks are scored (each once, from where scoring first saw the market, never
across a gap), what outcome each prediction gets, the rolling figures against an offline
computation on the same ticks, and a restart in the middle of it all."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.ml import checkpoint, metrics
from tests.helpers.apps import install_models
from tests.helpers.live import (
    MARKET_PATH,
    app,
    craft,
    exchange,
    live,
    log_in,
    logged,
    moves,
    offline,
    rises,
    shared_cut,
    step,
    stored,
    trades,
    train_tiny,
)


@pytest.fixture(autouse=True)
def _log_backend(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test on each backend of the prediction log (the ticks stay in SQLite)."""
    log_in(database, monkeypatch)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("live-model"))


def same(got: float | None, want: float) -> bool:
    """A live figure (None where undefined) against the offline one (NaN where undefined)."""
    return (got is None and math.isnan(want)) or (got is not None and got == pytest.approx(want, abs=1e-12))


def test_each_stored_tick_is_scored_once_and_its_outcome_is_the_next_stored_tick(
    tmp_path: Path, model_file: Path
) -> None:
    """Pulls cut through timestamps that several trades share, so a tick's next tick often
    arrives with a later pull: its prediction waits with no outcome, then gets the right one."""
    ts = trades(moves(220, seed=1), seed=1)
    cuts = [shared_cut(ts, 60), shared_cut(ts, 110), shared_cut(ts, 150), len(ts)]
    [mid] = install_models(tmp_path, [model_file])
    two = craft(model_file, tmp_path / "models", "two-ahead", horizon=2)  # a shadow, 2 ticks ahead
    with exchange(ts) as (feed, url), app(tmp_path, url) as c:
        step(c, feed, cuts[0])  # first sight of the market: scoring starts at its newest tick
        assert logged(c) == []
        assert c.get(f"{MARKET_PATH}/live").json()["scored_through"] == ts[cuts[0] - 1]["T"] / 1000
        open_before: dict[str, Any] | None = None
        for upto in cuts[1:]:
            step(c, feed, upto)
            ticks = stored(c)
            assert ticks.price.tolist() == [float(t["p"]) for t in ts[:upto]]
            rows = logged(c, model_id=mid)
            idx = np.arange(cuts[0], upto)  # every tick stored after the start, once, in store order
            assert [r["time"] for r in rows] == ticks.time[idx].tolist()
            keys = [(r["time"], r["seq"]) for r in rows]
            assert keys == sorted(set(keys))
            assert [r["outcome"] for r in rows] == rises(ticks, idx)
            assert {(r["role"], r["calibrator_version"], r["model_id"]) for r in rows} == {("active", 0, mid)}
            last = rows[-1]
            assert last["outcome"] is None and last["resolved_at"] is None
            if open_before is not None:  # the one left open by the last pull, resolved by this one
                [now] = [
                    r for r in rows if (r["time"], r["seq"]) == (open_before["time"], open_before["seq"])
                ]
                assert now["outcome"] is not None and now["resolved_at"] >= now["scored_at"]
                assert now["probability"] == open_before["probability"]
            open_before = last
            ahead = logged(c, model_id=two)  # the same ticks; its last two wait for their outcome
            assert [(r["time"], r["seq"]) for r in ahead] == keys and {r["role"] for r in ahead} == {"shadow"}
            assert [r["outcome"] for r in ahead] == rises(ticks, idx, horizon=2)
            assert [r["outcome"] for r in ahead[-2:]] == [None, None]
        # the cuts split shared timestamps, and an unchanged price is no rise
        assert all(ts[k - 1]["T"] == ts[k]["T"] for k in cuts[:-1])
        flat = [
            r for r, i in zip(rows, idx, strict=True) if i + 1 < upto and ticks.price[i + 1] == ticks.price[i]
        ]
        assert flat and {r["outcome"] for r in flat} == {0}


def test_live_probabilities_and_rolling_metrics_equal_an_offline_computation(
    tmp_path: Path, model_file: Path
) -> None:
    ts = trades(moves(300, seed=2), seed=2)
    [mid] = install_models(tmp_path, [model_file])
    with exchange(ts) as (feed, url), app(tmp_path, url) as c:
        for upto in (60, 170, 300):
            step(c, feed, upto)
        live(c).refresh()
        ticks, model = stored(c), checkpoint.load(tmp_path / "models" / f"{mid}.pt")
        rows = logged(c, model_id=mid)
        idx = np.arange(60, 300)
        got = np.array([r["probability"] for r in rows])
        # float32 nets: how windows are batched moves the last bits (up to ~5e-8 seen), nothing more
        np.testing.assert_allclose(got, offline(model, ticks, idx), rtol=0, atol=1e-6)

        done = idx[:-1]  # the newest has no outcome yet
        y = np.array(rises(ticks, done), dtype=np.float64)
        p = got[:-1]
        want = metrics.report(y, p, model.threshold)
        last_move = np.sign(ticks.price[done] - ticks.price[done - 1])
        body = c.get(f"{MARKET_PATH}/live").json()
        [entry] = body["models"]
        assert (entry["model_id"], entry["role"], entry["calibrator_version"]) == (mid, "active", 0)
        w = entry["windows"]["last_1000"]
        assert w["count"] == len(done) == 239
        for k in ("auc", "brier", "log_loss", "ece", "base_rate", "base_brier", "ppv", "npv"):
            assert same(w[k], want[k]), k
        assert w["threshold"] == model.threshold
        assert same(w["last_move_auc"], metrics.roc_auc(y, last_move))
        # every outcome is within the newest 10,000, the last hour and the last day
        assert entry["windows"] == dict.fromkeys(("last_1000", "last_10000", "last_hour", "last_day"), w)
        bins = metrics.reliability(y, p)
        assert [b["count"] for b in entry["reliability"]] == [b.count for b in bins]
        assert all(
            same(b["mean_p"], o.mean_p) and same(b["observed"], o.observed)
            for b, o in zip(entry["reliability"], bins, strict=True)
        )
        assert entry["alerts"] == {
            "auc_floor": want["auc"] < 0.5,
            "below_last_move": want["auc"] < metrics.roc_auc(y, last_move),
            "ece_bound": want["ece"] > 0.05,
        }
        assert entry["validation"]["auc"] == pytest.approx(model.meta.metrics["val"]["auc"])
        mine = c.get(f"/models/{mid}/live").json()
        [market] = mine["markets"]
        assert (market["exchange"], market["symbol"], market["windows"]) == (
            "binance",
            "BTC-USD",
            entry["windows"],
        )


def test_ticks_whose_window_reaches_back_across_a_gap_are_not_scored(
    tmp_path: Path, model_file: Path
) -> None:
    ts = trades(moves(220, seed=3), seed=3, pauses={120: 10.0})  # 10 s without a trade before 120
    [mid] = install_models(tmp_path, [model_file])
    span = checkpoint.load(model_file).spec.min_ticks  # ticks one window reads, ending at its own
    with exchange(ts) as (feed, url), app(tmp_path, url, gap_s=5.0) as c:
        for upto in (60, 125, 140, 220):  # the gap ends up in the context later steps read back
            step(c, feed, upto)
        ticks = stored(c)
        rows = logged(c, model_id=mid)
        scored = np.r_[60:120, 120 + span - 1 : 220]
        assert [r["time"] for r in rows] == ticks.time[scored].tolist()
        assert [r["outcome"] for r in rows] == rises(ticks, scored)
        # the tick before the gap is scored: its window is clear of it (its outcome is the next tick's)
        assert rows[59]["time"] == ticks.time[119] and rows[60]["time"] == ticks.time[120 + span - 1]


def test_a_restart_keeps_the_log_and_metrics_and_resumes_where_scoring_stopped(
    tmp_path: Path, model_file: Path
) -> None:
    ts = trades(moves(260, seed=4), seed=4)
    stop_at = shared_cut(ts, 150)  # the restart falls inside a shared timestamp
    [mid] = install_models(tmp_path, [model_file])
    with exchange(ts) as (feed, url):
        with app(tmp_path, url) as c:
            step(c, feed, 60)
            step(c, feed, stop_at)
            live(c).refresh()
            before = {
                "market": c.get(f"{MARKET_PATH}/live").json(),
                "model": c.get(f"/models/{mid}/live").json(),
                "rows": logged(c),
            }
            metrics_text = [
                x for x in c.get("/metrics").text.splitlines() if x.startswith("tickcast_live_auc")
            ]
        assert before["market"]["models"][0]["windows"]["last_1000"]["count"] == stop_at - 61
        with app(tmp_path, url) as c:
            assert c.get(f"{MARKET_PATH}/live").json() == before["market"]
            assert c.get(f"/models/{mid}/live").json() == before["model"]
            assert logged(c) == before["rows"]
            after_text = [x for x in c.get("/metrics").text.splitlines() if x.startswith("tickcast_live_auc")]
            assert after_text == metrics_text and len(metrics_text) > 1
            step(c, feed, len(ts))
            ticks, rows = stored(c), logged(c)
            idx = np.arange(60, len(ts))  # no tick scored twice, none skipped
            assert [r["time"] for r in rows] == ticks.time[idx].tolist()
            assert [r["outcome"] for r in rows] == rises(ticks, idx)
            old = before["rows"]
            assert rows[: len(old) - 1] == old[:-1]  # untouched, scored_at included
            assert {k: v for k, v in rows[len(old) - 1].items() if k not in ("outcome", "resolved_at")} == {
                k: v for k, v in old[-1].items() if k not in ("outcome", "resolved_at")
            }
            assert old[-1]["outcome"] is None and rows[len(old) - 1]["outcome"] is not None
