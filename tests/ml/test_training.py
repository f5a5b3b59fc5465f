"""fit(): it learns the synthetic market, records what it did, repeats itself, reports
progress, stops when asked or when it stops improving, and resumes where it left off."""

from __future__ import annotations

import json
import math
import time
from datetime import datetime

import numpy as np
import pytest
import torch

from app.market.ticks import TickArrays
from app.ml import checkpoint, features, metrics, training
from app.ml.training import TrainConfig, TrainingCancelled, fit

SMALL = dict(seq_len=16, hidden_size=8, num_layers=1, batch_size=128, device="cpu")


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**SMALL, "num_epochs": 2, "patience": 0, **kw})


@pytest.fixture(scope="module")
def market():
    from app.market.sources import synthetic

    return synthetic.generate(12_000, seed=1)


@pytest.fixture(scope="module")
def fitted(market):
    """One real training run, shared by the tests that only inspect its result."""
    config = cfg(arch="GRU", hidden_size=16, num_epochs=3)
    return fit(
        market, config, data_info={"source": "synthetic", "exchange": "synthetic", "symbol": "BTC-USD"}
    ), config


# ---------------------------------------------------------------- it learns


def test_fit_learns_the_synthetic_market(fitted, market):
    """The synthetic market's learnable structure (bid-ask bounce, runs) is worth an AUC of
    about 0.545 (a logistic regression on the windows scores the same); a small GRU trained
    for three epochs on 12k ticks reaches ~0.545 on fresh ticks from another seed."""
    from app.market.sources import synthetic

    result, _ = fitted
    val = result.meta.metrics["val"]
    assert val["auc"] > 0.51, val  # ~2.4k windows: noisy; the fresh-data check below is tight
    assert val["brier"] < val["base_brier"] + 0.002, val  # calibrated: no worse than the base rate
    fresh = synthetic.generate(20_000, seed=12345)
    d = features.build_dataset(fresh, result.model.seq_len, norm=result.model.norm, whole=True)
    p = result.model.proba(d.windows[d.split.test])
    y = d.y(d.split.test)
    auc = metrics.roc_auc(y, p)
    assert auc > 0.53, auc  # ~20k windows: the standard error is about 0.004
    # and its probabilities are near the real rise rate on average
    assert abs(float(p.mean()) - float(y.mean())) < 0.05


def test_metadata_describes_the_model(fitted, market):
    result, config = fitted
    m = result.meta
    assert m is result.model.meta
    assert m.arch == "GRU"
    assert m.hparams == {"hidden_size": 16, "num_layers": 1, "dropout": 0.1}
    assert m.seq_len == 16 and m.horizon == 1 and m.target == "tick"
    assert m.features == list(features.FEATURES)
    data = features.build_dataset(market, 16)
    assert m.norm == data.norm.to_dict()  # the training split's statistics
    # unweighted loss: no offset; a calibrator fitted on validation, the threshold chosen there
    assert m.logit_offset == 0.0 and m.calibrator is not None and m.threshold_rule == "f1"
    p_val = result.model.proba(data.windows[data.split.val])
    assert m.threshold == metrics.choose_threshold(data.y(data.split.val), p_val, "f1")
    assert set(m.metrics) == {"val", "test"}
    for part in ("val", "test"):
        keys = {"auc", "brier", "log_loss", "ece", "ppv", "npv", "coverage", "base_rate", "n"}
        assert keys <= set(m.metrics[part])
        assert {"base_rate", "last_move", "logistic", "tree"} <= set(m.baselines[part])
    assert m.metrics["val"]["n"] == len(data.split.val)
    assert m.metrics["test"]["n"] == len(data.split.test)
    assert m.data["start_time"] == float(market.time[0])
    assert m.data["end_time"] == float(market.time[-1])
    assert m.data["n_ticks"] == len(market)
    assert m.data["exchange"] == "synthetic"
    assert m.data["split"] == {
        "train": len(data.split.train),
        "val": len(data.split.val),
        "test": len(data.split.test),
    }
    assert datetime.fromisoformat(m.created_at).tzinfo is not None
    assert {"tickcast", "torch", "python"} <= set(m.versions)
    assert m.train["arch"] == "GRU" and m.train["seed"] == config.seed
    assert 1 <= m.best_epoch <= m.epochs == len(result.history) == 3
    assert m.id is not None and checkpoint.MODEL_ID.match(m.id) and result.model.id == m.id
    assert result.stop_reason == "completed"


def test_reported_metrics_are_those_of_the_returned_model(fitted, market):
    result, _ = fitted
    data = features.build_dataset(market, 16, norm=result.model.norm)
    for part in ("val", "test"):
        idx = data.split.part(part)
        p = result.model.proba(data.windows[idx])
        y = data.y(idx)
        got = result.meta.metrics[part]
        assert got == metrics.report(y, p, result.meta.threshold)
    # the best epoch's validation ranking, before calibration (a Platt calibrator keeps it exactly)
    best = result.history[result.meta.best_epoch - 1]["val"]
    tol = 1e-9 if (result.meta.calibrator or {}).get("kind") == "platt" else 0.01
    assert result.meta.metrics["val"]["auc"] == pytest.approx(best["auc"], abs=tol)


def test_result_saves_and_loads_with_identical_outputs(fitted, market, tmp_path):
    result, _ = fitted
    path = result.save(tmp_path)
    assert path == tmp_path / f"{result.model.id}.pt"
    loaded = checkpoint.load(path)
    # NaN (a baseline's undefined NPV) is unequal to itself: compare the recorded text
    assert json.dumps(loaded.meta.to_dict(), sort_keys=True) == json.dumps(
        result.meta.to_dict(), sort_keys=True
    )
    data = features.build_dataset(market, 16, norm=loaded.norm)
    w = data.windows[:500]
    assert loaded.calibrator == result.model.calibrator
    np.testing.assert_array_equal(loaded.proba(w), result.model.proba(w))
    assert loaded.predict(market) == pytest.approx(result.model.predict(market), abs=1e-7)


# ---------------------------------------------------------------- repeatable


def test_same_seed_same_run(market):
    ticks = market[:4000]
    a = fit(ticks, cfg(arch="CNN"))
    b = fit(ticks, cfg(arch="CNN"))
    assert a.meta.metrics == b.meta.metrics
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    for k, v in a.model.net.state_dict().items():
        torch.testing.assert_close(v, b.model.net.state_dict()[k], rtol=0, atol=0)
    c = fit(ticks, cfg(arch="CNN", seed=1))
    assert [h["train_loss"] for h in a.history] != [h["train_loss"] for h in c.history]


# ---------------------------------------------------------------- progress and cancel


def test_progress_per_batch_and_per_epoch(market):
    ticks = market[:3000]
    events: list[training.Progress] = []
    config = cfg(batch_size=256, progress_every=1, num_epochs=3)
    fit(ticks, config, progress=events.append)
    split = features.build_dataset(ticks, 16).split
    n_train = len(split.train)
    n_batches = math.ceil(n_train / 256) if n_train % 256 != 1 else n_train // 256
    expected = []
    for e in (1, 2, 3):
        expected += [("batch", e, b) for b in range(1, n_batches + 1)] + [("epoch", e, n_batches)]
    assert [(p.kind, p.epoch, p.batch) for p in events] == expected
    assert all(p.num_epochs == 3 and p.num_batches == n_batches for p in events)
    assert all(p.val is None for p in events if p.kind == "batch")
    assert all({"auc", "brier", "loss"} <= set(p.val) for p in events if p.kind == "epoch")
    assert all(math.isfinite(p.loss) and p.loss > 0 for p in events)
    elapsed = [p.elapsed_s for p in events]
    assert elapsed == sorted(elapsed)


def test_progress_every_n_batches(market):
    events: list[training.Progress] = []
    fit(market[:3000], cfg(batch_size=64, progress_every=5, num_epochs=1), progress=events.append)
    batches = [p.batch for p in events if p.kind == "batch"]
    assert batches and all(b % 5 == 0 for b in batches)
    assert batches == list(range(5, batches[-1] + 1, 5))
    assert [p.kind for p in events].count("epoch") == 1


def test_should_stop_cancels_between_batches(market, tmp_path):
    calls = []
    events: list[training.Progress] = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) >= 3

    state = tmp_path / "state.pt"
    t0 = time.perf_counter()
    with pytest.raises(TrainingCancelled, match="epoch 1, batch 2"):
        fit(
            market[:3000],
            cfg(batch_size=32, progress_every=1, num_epochs=50),
            progress=events.append,
            should_stop=stop,
            state_path=state,
        )
    assert time.perf_counter() - t0 < 10
    assert len(calls) == 3
    assert [(p.kind, p.batch) for p in events] == [("batch", 1), ("batch", 2)]
    assert not state.exists()


def test_should_stop_before_any_batch(market):
    with pytest.raises(TrainingCancelled):
        fit(market[:3000], cfg(num_epochs=50), should_stop=lambda: True)


# ---------------------------------------------------------------- early stopping


def test_early_stopping_when_the_monitor_cannot_improve(market):
    # lr 1e-30 leaves every weight where it is (far below float32 resolution), and a GRU has
    # no batch-norm statistics: each epoch scores exactly the same, so only epoch 1 is "better"
    events: list[training.Progress] = []
    r = fit(market[:3000], cfg(arch="GRU", lr=1e-30, num_epochs=20, patience=2), progress=events.append)
    assert [h["epoch"] for h in r.history] == [1, 2, 3]
    assert r.stop_reason.startswith("early stop") and "log_loss" in r.stop_reason
    assert r.meta.best_epoch == 1 and r.meta.epochs == 3
    assert [p.epoch for p in events if p.kind == "epoch"] == [1, 2, 3]


def test_patience_zero_runs_every_epoch(market):
    r = fit(market[:3000], cfg(arch="GRU", lr=1e-30, num_epochs=4, patience=0))
    assert len(r.history) == 4 and r.stop_reason == "completed"


def test_early_stopping_on_a_lower_is_better_monitor(market):
    r = fit(market[:3000], cfg(arch="GRU", lr=1e-30, num_epochs=20, patience=1, monitor="brier"))
    assert len(r.history) == 2 and "brier" in r.stop_reason


# ---------------------------------------------------------------- state file and resume


def test_state_file_written_and_resume_continues(market, tmp_path):
    ticks = market[:4000]
    base = dict(arch="GRU", save_every=1, schedule="step")  # more epochs than planned: step cuts
    straight = fit(ticks, cfg(num_epochs=4, **base))

    state = tmp_path / "state.pt"
    first = fit(ticks, cfg(num_epochs=2, **base), state_path=state)
    assert state.is_file()
    payload = checkpoint.read(state)
    assert payload["train_state"]["epoch"] == 2
    assert [h["epoch"] for h in payload["train_state"]["history"]] == [1, 2]

    events: list[training.Progress] = []
    resumed = fit(ticks, cfg(num_epochs=4, **base), state_path=state, resume=state, progress=events.append)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]  # grows, nothing repeated
    assert resumed.history[:2] == first.history
    assert sorted({p.epoch for p in events}) == [3, 4]
    assert resumed.meta.id == first.meta.id
    assert checkpoint.read(state)["train_state"]["epoch"] == 4
    # continuing is the same run as never having stopped
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]
    assert resumed.meta.metrics == straight.meta.metrics
    # and the state file itself is a usable model (its best epoch so far)
    assert checkpoint.load(state).meta.best_epoch >= 1


def test_an_interrupted_one_cycle_run_resumes_as_if_never_stopped(market, tmp_path):
    ticks = market[:4000]
    config = cfg(arch="GRU", num_epochs=4, save_every=1, progress_every=1)
    straight = fit(ticks, config)
    state = tmp_path / "state.pt"
    seen: list[int] = []

    def stop_in_epoch_3(p: training.Progress) -> None:
        seen.append(p.epoch)

    with pytest.raises(TrainingCancelled):
        fit(ticks, config, state_path=state, progress=stop_in_epoch_3, should_stop=lambda: 3 in seen)
    assert checkpoint.read(state)["train_state"]["epoch"] == 2
    resumed = fit(ticks, config, state_path=state, resume=state)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]
    assert json.dumps(resumed.meta.metrics, sort_keys=True) == json.dumps(
        straight.meta.metrics, sort_keys=True
    )


def test_state_saved_at_the_best_epoch_only_by_default(market, tmp_path):
    state = tmp_path / "state.pt"
    fit(market[:3000], cfg(arch="GRU", lr=1e-30, num_epochs=3, save_every=0), state_path=state)
    ts = checkpoint.read(state)["train_state"]
    assert ts["epoch"] == 1 and ts["best_epoch"] == 1  # epochs 2, 3 did not improve


def test_resume_needs_the_same_model(market, tmp_path):
    state = tmp_path / "state.pt"
    fit(market[:3000], cfg(arch="GRU", num_epochs=1), state_path=state)
    with pytest.raises(ValueError, match="same architecture"):
        fit(market[:3000], cfg(arch="GRU", hidden_size=16, num_epochs=2), resume=state)
    with pytest.raises(ValueError, match="same architecture"):
        fit(market[:3000], cfg(arch="CNN", num_epochs=2), resume=state)


def test_resume_from_a_finished_model_is_refused(fitted, market, tmp_path):
    path = fitted[0].save(tmp_path)
    with pytest.raises(checkpoint.CheckpointError, match="no training state"):
        fit(market, cfg(arch="GRU", hidden_size=16, num_epochs=4), resume=path)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs",
    [
        {"seq_len": 0},
        {"hidden_size": -1},
        {"num_layers": 0},
        {"batch_size": 0},
        {"batch_size": 1.5},
        {"horizon": 0},
        {"num_epochs": -1},
        {"patience": -1},
        {"seed": -1},
        {"save_every": True},
        {"lr": 0.0},
        {"lr": -1e-3},
        {"lr": float("nan")},
        {"lr": float("inf")},
        {"weight_decay": -0.1},
        {"gamma": 0.0},
        {"gamma": 1.5},
        {"clip": -1.0},
        {"optimizer": "rmsprop"},
        {"monitor": "f1"},
        {"arch": "Transformer"},
        {"train_split": 1.0},
        {"train_split": 0.0},
        {"val_split": 0.0},
        {"train_split": 0.8, "val_split": 0.4},
        {"arch": "GRU", "dropout": 1.0},
        {"arch": "LSTM", "dropout": -0.5},
        {"num_threads": 0},
        {"step_size": 0},
    ],
)
def test_bad_config_raises_value_error(kwargs):
    with pytest.raises(ValueError):
        TrainConfig(**{**SMALL, **kwargs})


def test_config_accepts_aliases_and_case():
    assert TrainConfig(arch="RNNLinear").arch == "LSTM"
    assert TrainConfig(arch="gru").arch == "GRU"
    assert "dropout" not in TrainConfig(arch="CNN").hparams()


def test_too_few_ticks(market):
    with pytest.raises(ValueError, match="ticks"):
        fit(market[:20], cfg())


def test_one_class_training_split():
    n = 500
    flat = TickArrays(np.arange(n, dtype=np.float64), np.full(n, 100.0), np.ones(n))
    with pytest.raises(ValueError, match="only one class"):
        fit(flat, cfg())


def test_fewer_than_the_minimum_windows_are_refused_and_few_are_flagged(market):
    """MIN_WINDOWS windows at least (a model's metrics are noise below it); below FEW_WINDOWS the
    result carries a warning with the validation AUC's uncertainty."""
    need = training.ticks_needed(16, 1, 16)  # seq_len 16, horizon 1, the tick rule's 16 rows of history
    assert need == training.MIN_WINDOWS + 33
    with pytest.raises(
        training.TooFewTicks,
        match=rf"^synthetic:BTC-USD has {need - 1:,} ticks; training "
        rf"needs at least 1,000 windows, i.e. {need:,} ticks",
    ):
        fit(market[: need - 1], cfg(num_epochs=1), data_info={"exchange": "synthetic", "symbol": "BTC-USD"})
    small = fit(market[:need], cfg(num_epochs=1))
    (warning,) = small.warnings
    assert warning == (
        "few ticks: 1,000 windows (199 to validate), so metrics are noisy "
        "(validation AUC +-0.08); train on 10,000 windows or more to trust them"
    )
    assert fit(market[: training.FEW_WINDOWS + 33], cfg(num_epochs=1)).warnings == []
