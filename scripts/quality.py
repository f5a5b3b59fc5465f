#!/usr/bin/env python
"""Model quality under one fixed protocol: does the net beat the tree, and are its probabilities true?

The protocol (issue 13): the first 80% of a market's ticks is all a model may
learn from (tickcast carves its validation split, for early stopping, calibration
and the threshold, from inside it: --split 0.75,0.25 by default, no internal test
part); every window ending in the last 20% is the test, scored once. The
reference is scikit-learn's HistGradientBoostingClassifier(max_iter=200,
learning_rate=0.05, early_stopping=False, random_state=0) fitted on every
learning window's 32 log returns, log1p amounts, unchanged-price flags and
log1p gaps. Differences come with 95% moving-block bootstrap intervals (blocks
of 500 windows).

    python scripts/quality.py                           # the Bitstamp file if present, else synthetic
    python scripts/quality.py --data synthetic:200000
    python scripts/quality.py --target event            # trades sharing a timestamp merged first
    python scripts/quality.py --config '{"arch": "GRU", "hidden_size": 64}'
    python scripts/quality.py --test-on synthetic:200000   # transfer: learn on --data, test on another
    python scripts/quality.py --json                    # last line: one JSON object

Seeds are fixed (--seed), so each figure is reproduced by the command that printed it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from app.market.loading import load_ticks
from app.market.ticks import TickArrays
from app.ml import baselines, bootstrap, evaluation, features, metrics, training, tree
from app.ml.config import TrainConfig

BITSTAMP = Path(__file__).resolve().parents[2] / "shared" / "data" / "bitstamp_btcusd_2018-08.csv"
LEARN = 0.8


def test_start(ticks: TickArrays, seq_len: int, target: str) -> tuple[int, int]:
    """(first tick of the test slice, index of the first learning-free tick): the slice starts
    early enough that its first window ends at the first tick (or event) of the last 20%.
    `seq_len`: the ticks a window reads before its last one (WindowSpec.min_ticks - 1)."""
    n80 = int(LEARN * len(ticks))
    if target == "tick":
        return n80 - seq_len, n80
    starts = np.concatenate(([0], np.flatnonzero(np.diff(ticks.time) != 0) + 1))  # first tick of each event
    e80 = int(np.searchsorted(starts, n80, side="right")) - 1  # the event holding tick n80
    e80 += starts[e80] < n80  # an event begun in the learning range is not a test event
    return int(starts[max(0, e80 - seq_len)]), n80


def scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    top_p, top_y = metrics.top_decile(y, p)
    return {
        "auc": metrics.roc_auc(y, p),
        "brier": metrics.brier(y, p),
        "log_loss": metrics.log_loss(y, p),
        "ece": metrics.ece(y, p),
        "top_decile_p": top_p,
        "top_decile_observed": top_y,
        "base_rate": float(np.mean(y)),
        "n": float(len(y)),
    }


def run(data: str, test_on: str | None, cfg: TrainConfig) -> dict[str, Any]:
    ticks = load_ticks(data).ticks  # a synthetic market is always seed 0's: the seed is the training's
    other = load_ticks(test_on).ticks if test_on else ticks
    learn = ticks[: int(LEARN * len(ticks))]
    t0 = time.perf_counter()
    fitted = training.fit(learn, cfg, progress=_progress)
    train_s = time.perf_counter() - t0
    model = fitted.model
    first, _ = test_start(other, model.spec.min_ticks - 1, cfg.target)
    test = evaluation.dataset_for(model, other[first:], whole=True)
    idx = test.split.part("test")
    y, p_net = test.y(idx), evaluation.model_probs(model, test, idx)
    # the tree learns from every window of the test market's learning range, as in the issue
    native = other[: int(LEARN * len(other))]
    fit_data = evaluation.dataset_for(model, native, whole=True)
    fit = baselines.Windows(fit_data, fit_data.split.part("test"))
    t1 = time.perf_counter()
    p_tree = tree.fit_predict(
        fit.raw(tree.TREE_COLUMNS), fit.y(), baselines.Windows(test, idx).raw(tree.TREE_COLUMNS)
    )
    tree_s = time.perf_counter() - t1
    auc = bootstrap.difference(y, p_net, p_tree, metrics.roc_auc)
    brier = bootstrap.difference(y, p_tree, p_net, metrics.brier)  # tree minus net: > 0 when the net wins
    return {
        "data": data,
        "test_on": test_on or data,
        "config": {k: v for k, v in cfg.to_dict().items() if v != getattr(TrainConfig(), k)},
        "model": {**scores(y, p_net), "train_s": round(train_s, 1), "epochs": fitted.meta.epochs},
        "tree": {**scores(y, p_tree), "train_s": round(tree_s, 1)},
        "auc_gain": {"estimate": auc.estimate, "low": auc.low, "high": auc.high},
        "brier_gain": {"estimate": brier.estimate, "low": brier.low, "high": brier.high},
        "calibrator": (fitted.meta.calibrator or {}).get("kind"),
        "threshold": fitted.meta.threshold,
        "threshold_rule": fitted.meta.threshold_rule,
        "reliability": [  # empty bins' means are null: strict JSON has no NaN
            {k: None if isinstance(v, float) and v != v else v for k, v in vars(b).items()}
            for b in metrics.reliability(y, p_net)
        ],
        "test_threshold_scores": {
            k: v
            for k, v in metrics.report(y, p_net, fitted.meta.threshold).items()
            if k in ("ppv", "npv", "coverage")
        },
    }


def _progress(p: training.Progress) -> None:
    if p.val is not None:
        print(
            f"  epoch {p.epoch}: {p.elapsed_s:6.1f} s  val auc {p.val['auc']:.4f}  "
            f"log loss {p.val['log_loss']:.4f}",
            file=sys.stderr,
            flush=True,
        )


def report(r: dict[str, Any]) -> str:
    m, t = r["model"], r["tree"]
    lines = [
        f"learn: first 80% of {r['data']}; test: every window of the last 20% of {r['test_on']} "
        f"({int(m['n']):,} windows, base rate {m['base_rate']:.3f}); config {r['config'] or 'defaults'}",
        "",
        "| model | test AUC | Brier | log loss | ECE | top decile p / observed | training s |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for name, s in (("tree", t), ("tickcast", m)):
        lines.append(
            f"| {name} | {s['auc']:.4f} | {s['brier']:.4f} | {s['log_loss']:.4f} | {s['ece']:.4f} | "
            f"{s['top_decile_p']:.3f} / {s['top_decile_observed']:.3f} | {s['train_s']:.1f} |"
        )
    a, b = r["auc_gain"], r["brier_gain"]
    lines += [
        "",
        f"AUC gain over the tree   {a['estimate']:+.4f}  95% CI [{a['low']:+.4f}, {a['high']:+.4f}]",
        f"Brier gain over the tree {b['estimate']:+.4f}  95% CI [{b['low']:+.4f}, {b['high']:+.4f}]",
        f"calibrator {r['calibrator']}; threshold {r['threshold']:.4f} "
        f"({r['threshold_rule']} on validation): "
        + ", ".join(f"{k} {v:.3f}" for k, v in r["test_threshold_scores"].items()),
        "",
        "reliability of tickcast's test probabilities:",
        metrics.format_reliability([_bin(b) for b in r["reliability"]]),
    ]
    return "\n".join(lines)


def _bin(b: dict[str, Any]) -> metrics.Bin:
    return metrics.Bin(**{k: float("nan") if v is None else v for k, v in b.items()})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data", default=None, help="CSV or 'synthetic[:N]' (default: the Bitstamp file, else synthetic)"
    )
    p.add_argument("--test-on", default=None, help="test on the last 20%% of this market instead (transfer)")
    p.add_argument("--target", choices=features.TARGETS, default="tick", help="tick or event (default: tick)")
    p.add_argument("--config", default="{}", help="training settings as JSON (default: the defaults)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = p.parse_args(argv)
    if not tree.available():
        print(f"error: {tree.TreeUnavailable()}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    data = args.data or (str(BITSTAMP) if BITSTAMP.is_file() else "synthetic:200000")
    settings = {
        "train_split": 0.75,
        "val_split": 0.25,
        "device": "cpu",
        "seed": args.seed,
        "target": args.target,
    }
    cfg = TrainConfig.from_dict({**settings, **json.loads(args.config)})
    result = run(data, args.test_on, cfg)
    print(report(result))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
