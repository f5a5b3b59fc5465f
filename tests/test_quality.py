"""scripts/quality.py: the issue-13 protocol end to end on a small synthetic market, and the
block bootstrap it reports intervals with."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from app.market.sources import synthetic
from app.ml import bootstrap, metrics, tree

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("tickcast_quality_script", REPO / "scripts" / "quality.py")
assert _spec is not None and _spec.loader is not None
quality = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = quality
_spec.loader.exec_module(quality)


@pytest.mark.skipif(not tree.available(), reason="scikit-learn (tickcast[eval]) is not installed")
def test_the_protocol_reports_both_models_on_the_last_fifth(capsys: pytest.CaptureFixture[str]) -> None:
    small = json.dumps({"num_epochs": 1, "hidden_size": 8, "bins": 8, "seq_len": 16})
    assert quality.main(["--data", "synthetic:8000", "--config", small, "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    r = json.loads(out[-1])
    # every window ending in the last 20% of the ticks, none before: 1,600 of them (horizon 1)
    assert r["model"]["n"] == r["tree"]["n"] == 8000 - int(0.8 * 8000) - 1
    for who in ("model", "tree"):
        assert 0.0 <= r[who]["auc"] <= 1.0 and 0.0 < r[who]["brier"] < 0.3 and r[who]["ece"] >= 0
    a = r["auc_gain"]
    assert a["low"] <= a["estimate"] <= a["high"]
    assert a["estimate"] == pytest.approx(r["model"]["auc"] - r["tree"]["auc"], abs=1e-12)
    assert sum(b["count"] for b in r["reliability"]) == r["model"]["n"]
    assert "| tickcast |" in "\n".join(out) and "reliability of tickcast" in "\n".join(out)


def test_test_start_puts_the_first_window_at_the_last_fifth() -> None:
    ticks = synthetic.generate(3000, seed=1)
    first, n80 = quality.test_start(ticks, 48, "tick")
    assert n80 == 2400 and first == 2400 - 48  # the 48 ticks the first test window reads before its last
    first, n80 = quality.test_start(ticks, 48, "event")
    starts = np.concatenate(([0], np.flatnonzero(np.diff(ticks.time) != 0) + 1))
    k = int(np.searchsorted(starts, first))
    assert starts[k] == first and starts[k + 48] >= n80 and starts[k + 47] < n80


def test_the_block_bootstrap_brackets_a_real_difference_and_not_a_null_one() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(20_000) < 0.3).astype(float)
    good = np.clip(0.3 + 0.2 * (y - 0.3) + rng.normal(0, 0.1, y.size), 0.01, 0.99)
    noise = np.clip(0.3 + rng.normal(0, 0.1, y.size), 0.01, 0.99)
    gain = bootstrap.difference(y, good, noise, metrics.roc_auc, resamples=200)
    assert gain.excludes_zero and gain.low > 0
    null = bootstrap.difference(y, noise, noise[::-1].copy(), metrics.roc_auc, resamples=200)
    assert not null.excludes_zero
    with pytest.raises(ValueError, match="two blocks"):
        bootstrap.difference(y[:900], good[:900], noise[:900], metrics.roc_auc)
