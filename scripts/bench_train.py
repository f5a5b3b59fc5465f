#!/usr/bin/env python
"""Training speed against the compute floor, and the default CNN's time to quality.

For each architecture, at the ancestor's shapes (L=32, batch 64, 4 layers,
hidden 64), one tickcast epoch (training + validation, as `fit()` runs it) is
timed beside the same epoch as a bare loop over pre-built, pre-shuffled
tensors: the floor no data pipeline can beat. Both run in this process, one
after the other, on the same data and thread count.

    python scripts/bench_train.py            # Bitstamp file if present, else synthetic
    python scripts/bench_train.py --json     # last line: one JSON object
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from app.market.loading import load_ticks
from app.market.ticks import TickArrays
from app.ml import features, nets, training

BITSTAMP = Path(__file__).resolve().parents[2] / "shared" / "data" / "bitstamp_btcusd_2018-08.csv"
ANCESTOR = {"seq_len": 32, "batch_size": 64, "num_layers": 4, "hidden_size": 64}


def floor_epoch(ticks: TickArrays, arch: str, seed: int = 0) -> float:
    """One epoch as a bare loop: materialised, pre-shuffled tensors; no metrics, no callbacks."""
    cfg = training.TrainConfig(arch=arch, **ANCESTOR)
    data = features.build_dataset(ticks, cfg.seq_len, train=cfg.train_split, val=cfg.val_split)
    w, y = data.windows, data.targets
    g = torch.Generator().manual_seed(seed)
    lo, hi = data.split.train
    perm = torch.randperm(hi - lo, generator=g) + lo
    x_tr, y_tr = w[perm].contiguous(), y[perm].contiguous()
    x_va = w[data.split.val[0] : data.split.val[1]].contiguous()
    torch.manual_seed(seed)
    net = nets.build(arch, n_features=w.shape[2], seq_len=cfg.seq_len, **cfg.hparams())
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    crit = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(2.0))
    bs = cfg.batch_size
    n = len(x_tr) - (len(x_tr) % bs if len(x_tr) % bs == 1 else 0)
    t0 = time.perf_counter()
    net.train()
    for a in range(0, n, bs):
        loss = crit(net(x_tr[a : a + bs]), y_tr[a : a + bs])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    with torch.inference_mode():
        for a in range(0, len(x_va), cfg.eval_batch_size):
            net(x_va[a : a + cfg.eval_batch_size])
    return time.perf_counter() - t0


def tickcast_epoch(ticks: TickArrays, arch: str, seed: int = 0) -> tuple[float, int]:
    cfg = training.TrainConfig(arch=arch, num_epochs=1, patience=0, seed=seed, device="cpu", **ANCESTOR)
    result = training.fit(ticks, cfg)
    h = result.history[0]
    lo, hi = result.meta.data["split"]["train"]
    n_train = hi - lo
    return h["seconds"], n_train


def time_to_auc(ticks: TickArrays, target: float = 0.60, budget_epochs: int = 8) -> float | None:
    """Wall seconds from calling fit() with the defaults until validation AUC first >= target."""
    hit: list[float] = []

    def watch(p: training.Progress) -> None:
        if p.val is not None and not hit and p.val["auc"] >= target:
            hit.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    try:
        training.fit(
            ticks,
            training.TrainConfig(num_epochs=budget_epochs, device="cpu"),
            progress=watch,
            should_stop=lambda: bool(hit),
        )
    except training.TrainingCancelled:
        pass
    return hit[0] if hit else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data", default=None, help="CSV or 'synthetic[:N]' (default: the Bitstamp file, else synthetic)"
    )
    p.add_argument("--archs", default=",".join(nets.ARCHS), help="comma-separated architectures")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="interleaved floor/tickcast pairs per architecture; the best of each is kept "
        "(shared machines are noisy)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = p.parse_args(argv)
    source = args.data or (str(BITSTAMP) if BITSTAMP.is_file() else "synthetic:102588")
    ticks = load_ticks(source).ticks
    print(
        f"data: {source} ({len(ticks):,} ticks); torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; shapes {ANCESTOR}",
        flush=True,
    )
    out: dict[str, dict[str, float | None]] = {}
    print(f"{'arch':8s} {'epoch_s':>8s} {'floor_s':>8s} {'ratio':>6s} {'samples/s':>10s}", flush=True)
    for arch in [nets.canonical_arch(a) for a in args.archs.split(",")]:
        floor_epoch(ticks[:5000], arch)  # warm up kernels and allocator outside the timings
        floors, epochs = [], []
        for _ in range(max(1, args.repeat)):
            floors.append(floor_epoch(ticks, arch))
            epoch, n_train = tickcast_epoch(ticks, arch)
            epochs.append(epoch)
        floor, epoch = min(floors), min(epochs)
        out[arch] = {
            "epoch_s": round(epoch, 3),
            "floor_epoch_s": round(floor, 3),
            "ratio_to_floor": round(epoch / floor, 3),
            "samples_per_s": round(n_train / epoch, 1),
        }
        print(f"{arch:8s} {epoch:8.2f} {floor:8.2f} {epoch / floor:6.3f} {n_train / epoch:10.0f}", flush=True)
    if "CNN" in out:
        tta = time_to_auc(ticks)
        out["CNN"]["time_to_auc_060_s"] = None if tta is None else round(tta, 2)
        print(
            f"default CNN: validation AUC >= 0.60 after "
            f"{'never (8 epochs)' if tta is None else f'{tta:.1f} s'}",
            flush=True,
        )
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
