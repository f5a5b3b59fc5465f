"""`tickcast train` on a stored market cuts its ticks at their gaps, as a training job does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import app.cli
from app.market.sources import synthetic
from app.market.store import TickStore
from app.market.ticks import TickArrays
from app.ml import checkpoint

FAST = ["--sequence_length", "16", "--hidden_size", "8", "--num_layers", "1", "--num_epochs", "1", "--quiet"]


def test_training_on_a_stored_market_cuts_it_at_a_time_gap_and_missing_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t = synthetic.generate(3000, seed=6)  # ids '0'..'2999'
    time = t.time.copy()
    time[2000:] += 3600.0  # an hour without trades before tick 2000
    keep = np.ones(3000, dtype=bool)
    keep[1000:1002] = False  # two trades never stored
    ticks = TickArrays(time[keep], t.price[keep], t.amount[keep], t.trade_id[keep])
    db, out = tmp_path / "t.db", tmp_path / "models"
    with TickStore(db) as store:
        store.insert("bitstamp", "BTC-USD", ticks)
    argv = ["train", "CNN", "bitstamp:BTC-USD", "--store", str(db), "--out", str(out), *FAST]
    assert app.cli.main(argv) == 0
    err = capsys.readouterr().err
    # each cut costs seq_len 16 + 16 rows of history + horizon 1 windows
    assert (
        "bitstamp:BTC-USD: cut at 2 gaps (over 300 s, or trade ids missing) into 3 series; 66 windows fewer"
        in err
    )
    (path,) = out.glob("*.pt")
    data = checkpoint.load(path).meta.data
    assert (data["gaps"], data["gap_windows_removed"], data["gap_s"], data["n_series"]) == (2, 66, 300.0, 3)
    assert data["n_ticks"] == 2998


def test_gap_s_must_be_a_positive_number_of_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("0", "-5", "nan", "soon"):
        with pytest.raises(SystemExit) as e:
            app.cli.main(["train", "CNN", "synthetic", "--gap_s", bad])
        assert e.value.code == 2
        assert "--gap_s: must be a positive number of seconds" in capsys.readouterr().err
