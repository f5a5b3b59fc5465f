#!/usr/bin/env python
"""Per architecture: training speed against the compute floor, and time to the tree's quality.

Speed. At the ancestor's shapes (L=32, batch 64, 4 layers, hidden 64), one
tickcast epoch (training + validation, as `fit()` runs it) is timed beside the
same epoch as a bare loop over pre-built, pre-shuffled tensors: the floor no
data pipeline can beat. Both run in this process, one after the other, on the
same data and thread count (`--repeat` interleaved pairs, the best of each
kept). `--no-floor` skips this part.

Quality (issue 13, item 7), under the protocol of `scripts/quality.py`: the
first 80% of the ticks is all a model may learn from (split 0.75/0.25 into
training and validation, seed 0, the architecture's defaults otherwise), every
window ending in the last 20% is the test. Before training, the
gradient-boosted tree is fitted on the model's training windows and scored on
its validation windows; `time_to_tree_auc_s` is the wall time from calling
`fit()` until an epoch's validation AUC first reaches that tree's (None if no
epoch does). Training then runs to its end, and the fitted model is scored on
every test window (`test_auc`, `test_brier`, `test_ece`) beside the tree
fitted on every learning window (`tree_auc`, `tree_brier`), as quality.py does.

    python scripts/bench_train.py                       # the Bitstamp file if present, else synthetic
    python scripts/bench_train.py --archs TickNet --no-floor
    python scripts/bench_train.py --data synthetic:20000 --epochs 2 --json

With --json the last line is one JSON object: the run's `data`, `n_ticks`,
`torch`, `threads` and `floor_shapes`, and under `archs` a list with one object per
architecture, in the order asked: `arch`, `tree_val_auc`, `time_to_tree_auc_s`,
`train_s`, `epochs`, `test_auc`, `test_brier`, `test_ece`, `tree_auc`,
`tree_brier`, and, unless --no-floor, `epoch_s`, `floor_epoch_s`,
`ratio_to_floor`, `samples_per_s`. The test scores and the seeds are fixed,
so the command that printed a figure reproduces it (timings aside).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torch import nn

from app.market.loading import load_ticks
from app.market.ticks import TickArrays
from app.ml import baselines, checkpoint, evaluation, features, metrics, nets, training, tree
from app.ml.config import TrainConfig

BITSTAMP = Path(__file__).resolve().parents[2] / "shared" / "data" / "bitstamp_btcusd_2018-08.csv"
ANCESTOR = {"seq_len": 32, "batch_size": 64, "num_layers": 4, "hidden_size": 64}
PROTOCOL: dict[str, Any] = {"train_split": 0.75, "val_split": 0.25, "device": "cpu", "seed": 0}


def _sibling(name: str) -> ModuleType:
    """Another script of this folder (scripts are no package): quality.py's protocol is reused,
    not copied, so the two cannot drift apart."""
    spec = importlib.util.spec_from_file_location(f"tickcast_{name}", Path(__file__).with_name(f"{name}.py"))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load scripts/{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


quality = _sibling("quality")


def floor_epoch(ticks: TickArrays, arch: str, seed: int = 0) -> float:
    """One epoch as a bare loop: materialised, pre-shuffled tensors; no metrics, no callbacks.
    The same net, optimiser, loss and clipping as training, so only the pipeline differs."""
    cfg = TrainConfig.from_dict({"arch": arch, **ANCESTOR})
    data = features.build_dataset(
        ticks, cfg.seq_len, train=cfg.train_split, val=cfg.val_split, names=cfg.feature_names()
    )
    w, y = data.windows, data.targets
    g = torch.Generator().manual_seed(seed)
    train = torch.from_numpy(data.split.train)
    perm = train[torch.randperm(len(train), generator=g)]
    x_tr, y_tr = w[perm].contiguous(), y[perm].contiguous()
    x_va = w[torch.from_numpy(data.split.val)].contiguous()
    torch.manual_seed(seed)
    net = nets.build(arch, n_features=len(data.names), seq_len=cfg.seq_len, **cfg.hparams())
    if isinstance(net, nets.TickNet):
        net.fit_inputs(w[train][:, -1])
    opt = _optimizer(cfg, net)
    crit = nn.BCEWithLogitsLoss()
    bs = cfg.batch_size
    n = len(x_tr) - (1 if len(x_tr) % bs == 1 else 0)  # a lone sample breaks BatchNorm
    t0 = time.perf_counter()
    net.train()
    for a in range(0, n, bs):
        loss = crit(net(x_tr[a : a + bs]), y_tr[a : a + bs])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip > 0:
            nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
        opt.step()
    net.eval()
    with torch.inference_mode():
        for a in range(0, len(x_va), cfg.eval_batch_size):
            net(x_va[a : a + cfg.eval_batch_size])
    return time.perf_counter() - t0


def _optimizer(cfg: TrainConfig, net: nn.Module) -> torch.optim.Optimizer:
    """The optimiser `cfg` names, as training builds it."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def tickcast_epoch(ticks: TickArrays, arch: str, seed: int = 0) -> tuple[float, int]:
    """Seconds of one `fit()` epoch at the ancestor's shapes, and its training windows."""
    cfg = TrainConfig.from_dict(
        {"arch": arch, "num_epochs": 1, "patience": 0, "seed": seed, "device": "cpu", **ANCESTOR}
    )
    result = training.fit(ticks, cfg)
    return result.history[0]["seconds"], int(result.meta.data["split"]["train"])


def timing(ticks: TickArrays, arch: str, repeat: int) -> dict[str, float]:
    """The best of `repeat` interleaved floor/tickcast pairs (shared machines are noisy)."""
    floor_epoch(ticks[:5000], arch)  # warm up kernels and allocator outside the timings
    floors, epochs = [], []
    n_train = 0
    for _ in range(max(1, repeat)):
        floors.append(floor_epoch(ticks, arch))
        epoch, n_train = tickcast_epoch(ticks, arch)
        epochs.append(epoch)
    floor, epoch = min(floors), min(epochs)
    return {
        "epoch_s": round(epoch, 3),
        "floor_epoch_s": round(floor, 3),
        "ratio_to_floor": round(epoch / floor, 3),
        "samples_per_s": round(n_train / epoch, 1),
    }


@dataclass
class Trees:
    """The tree's figures, once per window shape (sequence length, horizon, target): its columns
    are unstandardised, so every architecture with that shape is judged against the same tree."""

    ticks: TickArrays
    val_auc: dict[tuple[int, int, str], float]
    test: dict[tuple[int, int, str], dict[str, float]]

    def validation_auc(self, cfg: TrainConfig) -> float:
        """AUC on the model's validation windows of the tree fitted on its training windows."""
        key = (cfg.seq_len, cfg.horizon, cfg.target)
        if key not in self.val_auc:
            learn = self.ticks[: int(quality.LEARN * len(self.ticks))]
            data = features.build_dataset(
                learn,
                cfg.seq_len,
                horizon=cfg.horizon,
                train=cfg.train_split,
                val=cfg.val_split,
                names=cfg.feature_names(),
                target=cfg.target,
            )
            fit = baselines.Windows(data, data.split.train)
            val = baselines.Windows(data, data.split.val)
            cols = tree.TREE_COLUMNS
            p = tree.fit_predict(fit.raw(cols), fit.y(), val.raw(cols))
            self.val_auc[key] = metrics.roc_auc(val.y(), p)
        return self.val_auc[key]

    def test_scores(self, model: checkpoint.Model, cfg: TrainConfig) -> dict[str, float]:
        """quality.py's tree: fitted on every learning window, scored on every test window."""
        key = (cfg.seq_len, cfg.horizon, cfg.target)
        if key not in self.test:
            first, _ = quality.test_start(self.ticks, model.spec.min_ticks - 1, cfg.target)
            test = evaluation.dataset_for(model, self.ticks[first:], whole=True)
            idx = test.split.part("test")
            native = evaluation.dataset_for(
                model, self.ticks[: int(quality.LEARN * len(self.ticks))], whole=True
            )
            fit = baselines.Windows(native, native.split.part("test"))
            cols = tree.TREE_COLUMNS
            p = tree.fit_predict(fit.raw(cols), fit.y(), baselines.Windows(test, idx).raw(cols))
            self.test[key] = quality.scores(test.y(idx), p)
        return self.test[key]


def time_to_quality(ticks: TickArrays, arch: str, trees: Trees, epochs: int | None) -> dict[str, Any]:
    """Train under the protocol, timing the first epoch whose validation AUC reaches the tree's;
    then the model's and the tree's scores on the test windows."""
    cfg = TrainConfig.from_dict(
        {"arch": arch, **PROTOCOL, **({"num_epochs": epochs} if epochs is not None else {})}
    )
    bar = trees.validation_auc(cfg)
    hit: list[float] = []

    def watch(p: training.Progress) -> None:
        if p.kind != "epoch" or p.val is None:
            return
        if not hit and p.val["auc"] >= bar:
            hit.append(time.perf_counter() - t0)
        print(
            f"  {arch} epoch {p.epoch}: {p.elapsed_s:6.1f} s  val auc {p.val['auc']:.4f} (tree {bar:.4f})",
            file=sys.stderr,
            flush=True,
        )

    learn = ticks[: int(quality.LEARN * len(ticks))]
    t0 = time.perf_counter()
    fitted = training.fit(learn, cfg, progress=watch)
    train_s = time.perf_counter() - t0
    model = fitted.model
    first, _ = quality.test_start(ticks, model.spec.min_ticks - 1, cfg.target)
    test = evaluation.dataset_for(model, ticks[first:], whole=True)
    idx = test.split.part("test")
    net = quality.scores(test.y(idx), evaluation.model_probs(model, test, idx))
    ref = trees.test_scores(model, cfg)
    return {
        "arch": arch,
        "tree_val_auc": round(bar, 4),
        "time_to_tree_auc_s": round(hit[0], 2) if hit else None,
        "train_s": round(train_s, 1),
        "epochs": fitted.meta.epochs,
        "test_auc": round(net["auc"], 4),
        "test_brier": round(net["brier"], 4),
        "test_ece": round(net["ece"], 4),
        "tree_auc": round(ref["auc"], 4),
        "tree_brier": round(ref["brier"], 4),
        "n_test": int(net["n"]),
    }


def table(rows: list[dict[str, Any]]) -> str:
    """The readable summary (also Markdown): quality first, then speed where it was measured."""

    def cell(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    lines = [
        "| arch | tree val AUC | s to tree AUC | train s | epochs | test AUC | Brier | ECE "
        "| tree AUC | tree Brier | epoch s | floor s | ratio | samples/s |",
        "| --- |" + " ---: |" * 13,
    ]
    for r in rows:
        cells = [
            r["arch"],
            cell(r["tree_val_auc"], ".4f"),
            cell(r["time_to_tree_auc_s"], ".1f"),
            cell(r["train_s"], ".1f"),
            str(r["epochs"]),
            *(cell(r[k], ".4f") for k in ("test_auc", "test_brier", "test_ece", "tree_auc", "tree_brier")),
            cell(r.get("epoch_s"), ".2f"),
            cell(r.get("floor_epoch_s"), ".2f"),
            cell(r.get("ratio_to_floor"), ".3f"),
            cell(r.get("samples_per_s"), ".0f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data", default=None, help="CSV or 'synthetic[:N]' (default: the Bitstamp file, else synthetic)"
    )
    p.add_argument(
        "--archs", default=",".join(nets.ARCHS), help="comma-separated architectures (default: all)"
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="interleaved floor/tickcast pairs per architecture; the best of each is kept "
        "(shared machines are noisy)",
    )
    p.add_argument("--no-floor", action="store_true", help="skip the epoch-vs-floor timing")
    p.add_argument(
        "--epochs", type=int, default=None, help="override num_epochs of the quality runs (quick checks)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not tree.available():
        print(f"error: {tree.TreeUnavailable()}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    archs = [nets.canonical_arch(a.strip()) for a in args.archs.split(",") if a.strip()]
    source = args.data or (str(BITSTAMP) if BITSTAMP.is_file() else "synthetic:102588")
    ticks = load_ticks(source).ticks
    print(
        f"data: {source} ({len(ticks):,} ticks); torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; floor shapes {ANCESTOR}",
        flush=True,
    )
    trees = Trees(ticks, {}, {})
    rows: list[dict[str, Any]] = []
    for arch in archs:
        row = time_to_quality(ticks, arch, trees, args.epochs)
        if not args.no_floor:
            row.update(timing(ticks, arch, args.repeat))
        rows.append(row)
        print(
            f"{arch}: test AUC {row['test_auc']:.4f} (tree {row['tree_auc']:.4f}), "
            f"validation AUC reached the tree's {row['tree_val_auc']:.4f} "
            + ("never" if row["time_to_tree_auc_s"] is None else f"after {row['time_to_tree_auc_s']:.1f} s"),
            flush=True,
        )
    print(table(rows))
    if args.json:
        out = {
            "data": source,
            "n_ticks": len(ticks),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "floor_shapes": ANCESTOR,
            "archs": rows,
        }
        print(json.dumps(out, default=_plain))
    return 0


def _plain(v: object) -> object:
    """numpy scalars as Python numbers for json."""
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"{type(v).__name__} is not JSON serialisable")


if __name__ == "__main__":
    raise SystemExit(main())
