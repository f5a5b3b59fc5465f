"""scripts/bench_train.py: time to the tree's quality, per architecture, as one JSON line."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from app.market.sources import synthetic
from app.ml import tree

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("tickcast_bench_train", REPO / "scripts" / "bench_train.py")
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench  # the importlib recipe: its dataclass looks its module up
_spec.loader.exec_module(bench)

KEYS = ("arch", "time_to_tree_auc_s", "test_auc", "test_brier", "test_ece", "tree_auc", "tree_brier")
TIMING = ("epoch_s", "floor_epoch_s", "ratio_to_floor", "samples_per_s")


@pytest.mark.skipif(not tree.available(), reason="scikit-learn (tickcast[eval]) is not installed")
def test_json_line_carries_each_architectures_quality(capsys: pytest.CaptureFixture[str]) -> None:
    rc = bench.main(["--data", "synthetic:6000", "--archs", "cnn", "--epochs", "2", "--no-floor", "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    result = json.loads(out[-1])
    assert result["data"] == "synthetic:6000" and result["n_ticks"] == 6000
    [row] = result["archs"]
    assert set(KEYS) <= set(row) and not set(TIMING) & set(row)  # --no-floor: no timings claimed
    assert row["arch"] == "CNN" and row["epochs"] <= 2
    for key in ("test_auc", "tree_auc", "tree_val_auc"):
        assert 0.0 <= row[key] <= 1.0
    for key in ("test_brier", "tree_brier"):
        assert 0.0 < row[key] < 0.25 + 0.05  # near the base-rate Brier of a ~1/3 rise rate, not worse
    assert row["test_ece"] >= 0.0
    tta = row["time_to_tree_auc_s"]
    assert tta is None or 0.0 < tta <= row["train_s"] + 0.1
    # the readable table names the architecture with its test AUC
    assert any(line.startswith("| CNN |") and f"{row['test_auc']:.4f}" in line for line in out)


def test_missing_scikit_learn_exits_2_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench.tree, "available", lambda: False)
    assert bench.main(["--data", "synthetic:6000", "--archs", "CNN", "--json"]) == 2
    captured = capsys.readouterr()
    assert str(tree.TreeUnavailable()) in captured.err and captured.out == ""


def test_floor_epoch_builds_a_ticknet_with_its_inputs_fitted() -> None:
    """The floor builds each net from the config (TickNet: every named column, ramps fitted)."""
    seconds = bench.floor_epoch(synthetic.generate(1500, seed=0), "TickNet")
    assert math.isfinite(seconds) and seconds > 0.0


def test_unknown_architecture_is_refused_before_any_training() -> None:
    with pytest.raises(ValueError, match="unknown architecture"):
        bench.main(["--data", "synthetic:6000", "--archs", "Transformer", "--no-floor"])
