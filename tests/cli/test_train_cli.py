"""scripts/train.py and scripts/evaluate.py end to end, as a user runs them.

The main paths run as real processes; the error paths call the same `main(argv)` in
process (a fresh interpreter with torch costs seconds per case).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.ml import checkpoint

REPO = Path(__file__).resolve().parents[2]
FAST = ["--sequence_length", "16", "--hidden_size", "8", "--num_layers", "1", "--num_workers", "1", "--quiet"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def run(script: str, *args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, f"scripts/{script}", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


def train_main(*args: object) -> int:
    """scripts/train.py's main() in this process, with the arguments a shell would pass."""
    spec = importlib.util.spec_from_file_location("tickcast_train_cli", REPO / "scripts" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([str(a) for a in args])


def evaluate_main(*args: object) -> int:
    spec = importlib.util.spec_from_file_location("tickcast_evaluate_cli", REPO / "scripts" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([str(a) for a in args])


def write_ancestor_csv(path: Path, n: int = 2000, seed: int = 3) -> Path:
    """The ancestor's format: pandas' unnamed index column, then time,price,amount."""
    from app.market.sources import synthetic

    t = synthetic.generate(n, seed=seed)
    pd.DataFrame({"time": t.time, "price": t.price, "amount": t.amount}).to_csv(path)
    return path


@pytest.fixture(scope="module")
def ticks_csv(tmp_path_factory) -> Path:
    path = write_ancestor_csv(tmp_path_factory.mktemp("data") / "ticks.csv")
    assert path.read_text().startswith(",time,price,amount\n0,")
    return path


@pytest.fixture(scope="module")
def trained(ticks_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    r = run("train.py", "CNN", ticks_csv, "--num_epochs", "2", "--out", out, *FAST)
    return r, out


def test_train_cli_end_to_end(trained, ticks_csv):
    r, out = trained
    assert r.returncode == 0, r.stderr
    files = list(out.glob("*.pt"))
    assert len(files) == 1, list(out.iterdir())  # one model, no temp files left
    assert list(out.iterdir()) == files
    model = checkpoint.load(files[0])
    assert model.meta.arch == "CNN"
    assert model.meta.hparams == {"hidden_size": 8, "num_layers": 1}
    assert model.seq_len == 16
    assert model.meta.epochs == 2
    assert model.meta.data["source"] == str(ticks_csv)
    assert model.meta.data["n_ticks"] == 2000
    assert "2,000 ticks" in r.stderr
    # the summary: id, where it went, and the val/test table with the base rate beside
    assert model.id in r.stdout
    assert str(files[0]) in r.stdout
    for word in ("| val", "| test", "auc", "brier", "base_rate", "ppv", "npv"):
        assert word in r.stdout, word
    assert np.isfinite(model.meta.metrics["test"]["auc"])


def test_evaluate_only_with_num_epochs_zero(trained, ticks_csv):
    _, out = trained
    model_file = next(out.glob("*.pt"))
    r = run(
        "train.py", "CNN", ticks_csv, "--num_epochs", "0", "--state_file", model_file, "--num_workers", "1"
    )
    assert r.returncode == 0, r.stderr
    assert "test split" in r.stdout
    for row in ("base_rate", "last_move", "logistic", model_file.stem):
        assert f"| {row}" in r.stdout, row
    assert list(out.glob("*.pt")) == [model_file]  # evaluating writes nothing


def test_num_epochs_zero_needs_a_model(ticks_csv, capsys):
    assert train_main("CNN", ticks_csv, "--num_epochs", "0") == 2
    assert "--state_file" in capsys.readouterr().err


def test_state_file_resumes(ticks_csv, tmp_path):
    state = tmp_path / "state.pt"
    args = [
        "GRU",
        ticks_csv,
        "--out",
        tmp_path / "out",
        "--state_file",
        state,
        "--save_every",
        "1",
        "--patience",
        "0",
        *FAST,
    ]
    assert train_main(*args, "--num_epochs", "1") == 0
    assert checkpoint.read(state)["train_state"]["epoch"] == 1
    assert train_main(*args, "--num_epochs", "2") == 0
    assert checkpoint.read(state)["train_state"]["epoch"] == 2
    models = sorted((tmp_path / "out").glob("*.pt"))
    assert len(models) == 1  # the resumed run keeps the model id, so it replaces the file
    assert checkpoint.load(models[0]).meta.epochs == 2


def test_bad_row_is_named(tmp_path):
    path = write_ancestor_csv(tmp_path / "bad.csv", n=300)
    lines = path.read_text().splitlines()
    idx, t, _, amount = lines[41].split(",")  # data row 40 is file line 42 (header is line 1)
    lines[41] = f"{idx},{t},abc,{amount}"
    path.write_text("\n".join(lines) + "\n")
    r = run("train.py", "CNN", path, "--num_epochs", "1", "--out", tmp_path, *FAST)
    assert r.returncode != 0
    assert "row 42" in r.stderr and "price" in r.stderr and "'abc'" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not list(tmp_path.glob("*.pt"))


def test_negative_price_is_named(tmp_path, capsys):
    path = write_ancestor_csv(tmp_path / "neg.csv", n=300)
    lines = path.read_text().splitlines()
    idx, t, _, amount = lines[10].split(",")
    lines[10] = f"{idx},{t},-5,{amount}"
    path.write_text("\n".join(lines) + "\n")
    assert train_main("CNN", path, "--num_epochs", "1", "--out", tmp_path, *FAST) == 2
    err = capsys.readouterr().err
    assert "row 11" in err and "price must be > 0" in err, err


def test_unknown_arch_lists_the_choices(ticks_csv, tmp_path, capsys):
    assert train_main("Transformer", ticks_csv, "--num_epochs", "1", "--out", tmp_path) == 2
    err = capsys.readouterr().err
    assert "Transformer" in err
    for name in ("CNN", "LSTM", "RNNLinear", "GRU", "PureRNN"):
        assert name in err, name


def test_missing_csv(tmp_path, capsys):
    assert train_main("CNN", tmp_path / "nope.csv", "--num_epochs", "1") == 2
    assert "nope.csv" in capsys.readouterr().err


def test_bad_flags_exit_with_usage(ticks_csv, capsys):
    with pytest.raises(SystemExit) as e:
        train_main("CNN", ticks_csv, "--split", "0.9,0.3")
    assert e.value.code == 2
    assert "--split" in capsys.readouterr().err


evaluate_present = pytest.mark.skipif(
    not (REPO / "scripts" / "evaluate.py").is_file(), reason="scripts/evaluate.py not written yet"
)


@evaluate_present
def test_evaluate_script(trained, ticks_csv):
    _, out = trained
    model_file = next(out.glob("*.pt"))
    r = run("evaluate.py", model_file, ticks_csv, "--split", "0.6,0.2")
    assert r.returncode == 0, r.stderr
    assert "test split" in r.stdout
    table = [line for line in r.stdout.splitlines() if line.startswith("| ")]
    names = [line.split("|")[1].strip() for line in table]
    assert names[:1] == ["model"]
    assert {"base_rate", "last_move", "logistic", model_file.stem} <= set(names)
    # the model's row carries the metrics it was saved with on the same test split
    model = checkpoint.load(model_file)
    header = [c.strip() for c in table[0].split("|")[1:-1]]
    row = next(line for line in table if line.split("|")[1].strip() == model_file.stem)
    cells = dict(zip(header, (c.strip() for c in row.split("|")[1:-1]), strict=True))
    assert float(cells["auc"]) == pytest.approx(model.meta.metrics["test"]["auc"], abs=1e-4)


@evaluate_present
def test_evaluate_scores_every_window_of_new_data_beside_references_from_the_training_data(
    trained, ticks_csv, tmp_path
):
    """New data by default: every window scored; the references fitted on the model's own training
    data (found from its metadata), or on a file given for that; a reliability table per model."""
    _, out = trained
    model_file = next(out.glob("*.pt"))
    model = checkpoint.load(model_file)
    r = run("evaluate.py", model_file, ticks_csv)
    assert r.returncode == 0, r.stderr
    assert "every window of 2,000 ticks" in r.stdout and "references fitted on" in r.stdout
    table = [line for line in r.stdout.splitlines() if line.startswith("| ")]
    names = {line.split("|")[1].strip() for line in table}
    assert {"base_rate", "last_move", "logistic", "tree", model_file.stem} <= names
    row = next(line for line in table if line.split("|")[1].strip() == model_file.stem)
    n_windows = 2000 - model.spec.min_ticks + 1 - model.meta.horizon
    assert row.split("|")[-2].strip() == str(n_windows)  # every window, not a split's part
    assert f"reliability of {model_file.stem} (ECE" in r.stdout and "mean predicted" in r.stdout
    # where the training data cannot be found, a file given for the references does it
    meta_free = run("evaluate.py", model_file, ticks_csv, "--baselines-from", ticks_csv)
    assert meta_free.returncode == 0, meta_free.stderr
    assert f"references fitted on 2,000 ticks of {ticks_csv}" in meta_free.stdout


@evaluate_present
def test_evaluate_script_rejects_a_bad_checkpoint(ticks_csv, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    assert evaluate_main(bad, ticks_csv) == 2
    err = capsys.readouterr().err
    assert "bad.pt" in err and "not a readable checkpoint" in err


def test_small_data_is_warned_about_after_the_tables(trained):
    r, _ = trained  # 2,000 ticks: under the 10,000 windows that keep metrics steady
    assert r.returncode == 0, r.stderr
    warning = next(line for line in r.stderr.splitlines() if line.startswith("warning: "))
    assert "few ticks" in warning and "noisy" in warning


def test_an_unwritable_out_is_named(ticks_csv, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert train_main("CNN", ticks_csv, "--num_epochs", "1", "--out", blocker / "models", *FAST) == 2
    err = capsys.readouterr().err
    assert "error: could not write" in err and str(blocker) in err and "Traceback" not in err


def test_an_out_of_bounds_flag_is_a_usage_error_not_a_traceback(ticks_csv):
    """The API's bounds hold on the command line too, said the way argparse says a bad flag."""
    r = run("train.py", "CNN", ticks_csv, "--hidden_size", "2000")
    assert r.returncode == 2 and "usage: train.py" in r.stderr and "Traceback" not in r.stderr
    assert "argument --hidden_size: must be an integer in 1..1024, got 2000" in r.stderr
