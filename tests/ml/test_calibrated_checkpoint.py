"""What issue 13 asks the tests to hold: a checkpoint carries its calibrator and threshold and
serves exactly the probabilities training measured, the tree baseline is scikit-learn's own,
and a file written before calibrators still loads and serves as it did.

One tiny TickNet is trained once for the module; every check reads it, or the file it wrote.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.market.ticks import TickArrays
from app.ml import calibration, checkpoint, evaluation, features, metrics, nets, training, tree
from app.ml.config import TrainConfig

CFG = TrainConfig(num_epochs=1, hidden_size=8, bins=8, batch_size=256, device="cpu", seed=0)


@pytest.fixture(scope="module")
def fitted(synth_ticks: TickArrays) -> training.FitResult:
    return training.fit(synth_ticks, CFG, data_info={"source": "synthetic"})


@pytest.fixture(scope="module")
def saved(fitted: training.FitResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fitted.save(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def loaded(saved: Path) -> checkpoint.Model:
    return checkpoint.load(saved)


@pytest.fixture(scope="module")
def data(loaded: checkpoint.Model, synth_ticks: TickArrays) -> features.WindowedData:
    """The ticks as the loaded model sees them, split as it was trained."""
    return evaluation.dataset_for(loaded, synth_ticks, *evaluation.training_split(loaded))


def val_windows(data: features.WindowedData) -> np.ndarray:
    return data.windows[torch.from_numpy(data.split.val)].numpy()


# ---------------------------------------------------------------- the calibrator


def test_the_calibrator_round_trips_through_the_checkpoint(
    fitted: training.FitResult, saved: Path, loaded: checkpoint.Model
) -> None:
    cal = fitted.model.calibrator
    assert loaded.calibrator == cal
    assert loaded.meta.calibrator == fitted.meta.calibrator == cal.to_dict()
    assert checkpoint.read(saved)["meta"]["calibrator"] == cal.to_dict()  # plain data in the file
    assert calibration.Calibrator.from_dict(loaded.meta.calibrator) == cal
    assert (loaded.meta.meta_version, loaded.meta.logit_offset) == (3, 0.0)  # the calibrator alone calibrates
    for key in (
        "id",
        "arch",
        "hparams",
        "seq_len",
        "features",
        "norm",
        "target",
        "threshold",
        "threshold_rule",
    ):
        assert getattr(loaded.meta, key) == getattr(fitted.meta, key), key


def test_the_loaded_model_serves_the_calibrated_probabilities_training_measured(
    fitted: training.FitResult, loaded: checkpoint.Model, data: features.WindowedData
) -> None:
    w = val_windows(data)
    p = loaded.proba(w)
    assert p.dtype == np.float64 and p.shape == (len(w),)
    np.testing.assert_array_equal(p, fitted.model.proba(w))
    np.testing.assert_array_equal(p, loaded.calibrator.apply(loaded.logits(w)))
    np.testing.assert_array_equal(p, evaluation.model_probs(loaded, data, data.split.val))
    raw = 1.0 / (1.0 + np.exp(-loaded.logits(w)))
    assert not np.allclose(p, raw, rtol=0, atol=1e-6)  # the calibrator is applied, not skipped


def test_a_prediction_from_ticks_is_the_calibrated_one(
    loaded: checkpoint.Model, synth_ticks: TickArrays
) -> None:
    for end in (loaded.spec.min_ticks, 1234, len(synth_ticks)):
        ticks = synth_ticks[:end]
        window = loaded.spec.last_window(ticks)[None]
        expected = loaded.calibrator.apply(loaded.logits(window))[0]
        assert loaded.predict(ticks) == expected


# ---------------------------------------------------------------- the threshold and the scores


def test_the_threshold_is_what_the_rule_chooses_on_validation(
    loaded: checkpoint.Model, data: features.WindowedData
) -> None:
    val = data.split.val
    y, p = data.y(val), evaluation.model_probs(loaded, data, val)
    assert loaded.meta.threshold_rule == CFG.threshold_rule == "f1"
    assert loaded.threshold == metrics.choose_threshold(y, p, loaded.meta.threshold_rule)
    assert loaded.threshold != pytest.approx(float(data.y(data.split.train).mean()))  # not the base rate
    expected = metrics.report(y, p, loaded.threshold)
    assert loaded.meta.metrics["val"] == pytest.approx(expected, rel=0, abs=0, nan_ok=True)


def test_the_test_scores_are_those_of_the_served_probabilities(
    loaded: checkpoint.Model, data: features.WindowedData
) -> None:
    test = data.split.part("test")
    y, p = data.y(test), evaluation.model_probs(loaded, data, test)
    expected = metrics.report(y, p, loaded.threshold)
    assert loaded.meta.metrics["test"] == pytest.approx(expected, rel=0, abs=0, nan_ok=True)


# ---------------------------------------------------------------- TickNet's input edges


def test_the_fitted_input_edges_survive_the_round_trip(
    fitted: training.FitResult, loaded: checkpoint.Model, data: features.WindowedData
) -> None:
    assert isinstance(loaded.net, nets.TickNet) and isinstance(fitted.model.net, nets.TickNet)
    edges = loaded.net.encode.edges
    ramped = features.default_ramped("tick")
    assert loaded.meta.hparams == {
        "hidden_size": 8,
        "num_layers": 1,
        "dropout": 0.1,
        "bins": 8,
        "recent": 2,
        "ramped": ramped,
    }
    assert edges.shape == (ramped, CFG.bins + 1)
    torch.testing.assert_close(edges, fitted.model.net.encode.edges, rtol=0, atol=0)
    placeholder = torch.linspace(-3.0, 3.0, CFG.bins + 1).repeat(ramped, 1)
    assert not torch.allclose(edges, placeholder)
    # the quantiles of the training windows' last rows, as training fitted them
    last_rows = data.rows[torch.from_numpy(data.split.train + CFG.seq_len - 1), :ramped]
    q = torch.quantile(last_rows, torch.linspace(0, 1, CFG.bins + 1), dim=0).T
    torch.testing.assert_close(edges, q)


# ---------------------------------------------------------------- a file from before calibrators

# What fit() and checkpoint.save wrote at metadata version 2, literally: the ancestor's six
# columns, a logit offset undoing the class weighting, no calibrator, target or threshold rule.
V2_META = {
    "id": "gru-20250601-120000-0a1b2c",
    "arch": "GRU",
    "hparams": {"hidden_size": 8, "num_layers": 1, "dropout": 0.3},
    "seq_len": 10,
    "horizon": 1,
    "features": ["log_return", "log_amount", "log_gap", "up", "down", "flat"],
    "norm": {
        "mean": [-7.45e-06, 0.2266, 1.0049, 0.3157, 0.3753, 0.3090],
        "std": [0.000443, 0.3807, 1.0393, 0.4648, 0.4842, 0.4621],
    },
    "logit_offset": -0.7113,
    "threshold": 0.3169,
    "train": {
        "arch": "GRU",
        "seq_len": 10,
        "horizon": 1,
        "hidden_size": 8,
        "num_layers": 1,
        "dropout": 0.3,
        "batch_size": 256,
        "num_epochs": 3,
        "optimizer": "adam",
        "lr": 0.002,
        "weight_decay": 0.0,
        "momentum": 0.9,
        "step_size": 3,
        "gamma": 0.5,
        "clip": 1.0,
        "patience": 3,
        "monitor": "auc",
        "train_split": 0.6,
        "val_split": 0.2,
        "seed": 0,
        "device": "auto",
        "num_threads": None,
        "save_every": 0,
        "eval_batch_size": 4096,
        "progress_every": 20,
    },  # fmt: skip
    "data": {
        "source": "synthetic",
        "start_time": 1534131395.0,
        "end_time": 1534150041.0,
        "n_ticks": 4000,
        "split": {"train": [0, 2382], "val": [2383, 3175], "test": [3176, 3968]},
    },
    "created_at": "2025-06-01T12:00:00+00:00",
    "versions": {"tickcast": "0.1.0", "torch": "2.5.1", "python": "3.11.9"},
    "metrics": {
        "val": {
            "n": 792.0,
            "base_rate": 0.32,
            "auc": 0.58,
            "brier": 0.212,
            "log_loss": 0.61,
            "threshold": 0.3169,
        },
        "test": {
            "n": 792.0,
            "base_rate": 0.31,
            "auc": 0.57,
            "brier": 0.211,
            "log_loss": 0.61,
            "threshold": 0.3169,
        },
    },
    "best_epoch": 3,
    "epochs": 3,
    "train_seconds": 4.2,
    "job_id": "5d1e0c9a2b7f",
    "meta_version": 2,
}


@pytest.fixture(scope="module")
def v2_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(3)
    net = nets.build("GRU", n_features=6, seq_len=10, hidden_size=8, num_layers=1, dropout=0.3)
    path = tmp_path_factory.mktemp("old") / "gru-v2.pt"
    payload = {
        "format": "tickcast.checkpoint",
        "format_version": 1,
        "meta": V2_META,
        "state_dict": net.state_dict(),
    }
    torch.save(payload, path)
    return path, net.eval()


def test_a_file_from_before_calibrators_loads_with_its_own_columns(
    v2_file: tuple[Path, torch.nn.Module],
) -> None:
    model = checkpoint.load(v2_file[0])
    m = model.meta
    assert (m.meta_version, m.target, m.calibrator, m.threshold_rule, m.baselines) == (
        2,
        "tick",
        None,
        None,
        {},
    )
    assert model.spec.names == features.LEGACY_FEATURES and model.spec.target == "tick"
    assert model.spec.seq_len == 10 and model.threshold == 0.3169
    assert model.calibrator == calibration.Calibrator.offset(-0.7113)


def test_a_file_from_before_calibrators_serves_sigmoid_of_logit_plus_offset(
    v2_file: tuple[Path, torch.nn.Module], synth_ticks: TickArrays
) -> None:
    path, net = v2_file
    model = checkpoint.load(path)
    norm = features.Normalizer.from_dict(V2_META["norm"])
    for end in (11, 500, 4321):
        ticks = synth_ticks[:end]
        window = torch.from_numpy(features.last_window(ticks, 10, norm))[None]  # the ancestor's input
        with torch.no_grad():
            logit = float(net(window)[0])
        expected = 1.0 / (1.0 + np.exp(-(logit + V2_META["logit_offset"])))
        assert model.predict(ticks) == pytest.approx(expected, rel=1e-12)
        np.testing.assert_allclose(model.proba(window), [expected], rtol=1e-12)


# ---------------------------------------------------------------- the tree is scikit-learn's own


def test_the_tree_baseline_is_scikit_learn_run_directly(
    loaded: checkpoint.Model, data: features.WindowedData
) -> None:
    pytest.importorskip("sklearn", reason="scikit-learn (the optional eval extra) is not installed")
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import brier_score_loss, roc_auc_score

    cols = [data.names.index(c) for c in tree.TREE_COLUMNS]
    raw, L = data.raw[:, cols], data.seq_len

    def flat(idx: np.ndarray) -> np.ndarray:  # each window's L rows of the four columns, in a row
        return np.stack([raw[j : j + L] for j in idx]).reshape(len(idx), -1).astype(np.float64)

    train, val = data.split.train, data.split.val
    clf = HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.05, early_stopping=False, random_state=0
    )
    clf.fit(flat(train), data.y(train).astype(np.int64))
    p, y = clf.predict_proba(flat(val))[:, 1], data.y(val)
    recorded = loaded.meta.baselines["val"]["tree"]
    assert recorded["auc"] == pytest.approx(roc_auc_score(y, p), rel=0, abs=1e-12)
    assert recorded["brier"] == pytest.approx(brier_score_loss(y, p), rel=0, abs=1e-12)
    assert recorded["n"] == len(val)
