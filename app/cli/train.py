"""Train a next-tick rise classifier: the ancestor's `train.py`, kept and grown.

    python scripts/train.py CNN ticks.csv      (or: tickcast train CNN ticks.csv)
    python scripts/train.py LSTM synthetic --num_epochs 5
    python scripts/train.py GRU bitstamp:BTC-USD --store data/tickcast.db

Every ancestor flag still works; the defaults are the ones that train well
(the ancestor's SGD at lr=4 diverges).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from app.cli import HelpFormatter
from app.market.loading import DEFAULT_STORE, load_ticks
from app.market.ticks import TickArrays
from app.ml import checkpoint, evaluation, nets, training

D = training.TrainConfig


def parse_split(text: str) -> tuple[float, float]:
    """'0.6,0.2' -> train 0.6, validation 0.2, test the rest; '0.8' -> validation 0.2, no test."""
    try:
        parts = [float(x) for x in text.split(",")]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--split takes TRAIN[,VAL] fractions, got {text!r}") from e
    if len(parts) == 1:
        parts.append(1.0 - parts[0])
    if len(parts) != 2 or not all(0 < p < 1 for p in parts) or sum(parts) > 1 + 1e-9:
        raise argparse.ArgumentTypeError(
            f"--split takes TRAIN[,VAL] fractions in (0, 1) summing to <= 1, got {text!r}"
        )
    return parts[0], parts[1]


def build_parser(prog: str = "train.py") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("model", metavar="ARCH", help=f"one of {', '.join(nets.ARCHS)}, or RNNLinear (= LSTM)")
    p.add_argument(
        "data",
        nargs="?",
        default=None,
        help="a CSV file, 'synthetic[:N]', or a stored market exchange:SYMBOL (same as --source)",
    )
    p.add_argument("--source", default=None, help="the data, if not given as the second argument")
    p.add_argument(
        "--store",
        default=str(DEFAULT_STORE),
        help="tick store for exchange:SYMBOL sources, relative to the current directory",
    )
    p.add_argument(
        "--start", type=float, default=None, help="first tick time (unix s) to use (default: the first tick)"
    )
    p.add_argument(
        "--end",
        type=float,
        default=None,
        help="stop before this tick time (unix s) (default: after the last tick)",
    )
    g = p.add_argument_group("the ancestor's flags")
    g.add_argument(
        "--split",
        type=parse_split,
        default=(D.train_split, D.val_split),
        help="TRAIN[,VAL] chronological fractions; the rest is the test split "
        f"(default: {D.train_split:g},{D.val_split:g})",
    )
    g.add_argument(
        "--sequence_length",
        type=int,
        default=D.seq_len,
        help="window length L: ticks of history per prediction",
    )
    g.add_argument("--batch_size", type=int, default=D.batch_size, help="windows per training step")
    g.add_argument(
        "--num_layers",
        type=int,
        default=D.num_layers,
        help="stacked layers: convolution blocks (CNN) or recurrent layers",
    )
    g.add_argument(
        "--hidden_size",
        type=int,
        default=D.hidden_size,
        help="channels (CNN) or hidden units (LSTM, GRU, PureRNN) per layer",
    )
    g.add_argument(
        "--state_file",
        default=None,
        help="resumable checkpoint: resumed from if it exists, written every --save_every "
        "epochs and at each best epoch; with --num_epochs 0, the model to evaluate "
        "(default: none, not resumable)",
    )
    g.add_argument("--save_every", type=int, default=0, help="epochs between state saves (0: best only)")
    g.add_argument(
        "--num_epochs",
        type=int,
        default=D.num_epochs,
        help="passes over the training split (at most; see --patience); 0 evaluates --state_file only",
    )
    g.add_argument(
        "--optimizer",
        choices=("adam", "adamw", "sgd"),
        default=D.optimizer,
        help="adam, adamw or sgd (momentum 0.9)",
    )
    g.add_argument("--learning_rate", type=float, default=D.lr, help="the optimizer's step size")
    g.add_argument(
        "--weight_decay",
        type=float,
        default=D.weight_decay,
        help="weight decay (decoupled with adamw; 0: off)",
    )
    g.add_argument("--step_size", type=int, default=D.step_size, help="StepLR period in epochs")
    g.add_argument("--gamma", type=float, default=D.gamma, help="StepLR decay factor")
    g.add_argument(
        "--num_workers",
        type=int,
        default=None,
        help="CPU threads for torch (batches are gathered in place, so threads are "
        "where extra workers help) (default: torch's own choice)",
    )
    g.add_argument("--use_cuda", action="store_true", help="same as --device cuda")
    g2 = p.add_argument_group("new flags")
    g2.add_argument("--device", default=D.device, help="auto (cuda, then mps, then cpu), cpu, cuda, mps")
    g2.add_argument("--clip", type=float, default=D.clip, help="gradient-norm clip (0: off)")
    g2.add_argument("--patience", type=int, default=D.patience, help="early-stop patience (0: off)")
    g2.add_argument(
        "--monitor",
        default=D.monitor,
        help="validation metric for best/early stop: auc, accuracy, ppv, npv, brier, log_loss or loss",
    )
    g2.add_argument("--dropout", type=float, default=D.dropout, help="between LSTM/GRU layers")
    g2.add_argument("--horizon", type=int, default=D.horizon, help="predict the move h ticks ahead")
    g2.add_argument(
        "--seed",
        type=int,
        default=D.seed,
        help="seeds the weights, the batch order and a synthetic source: same seed, same CPU run",
    )
    g2.add_argument(
        "--out",
        default="models",
        help="folder for the finished model file, relative to the current directory",
    )
    g2.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def config_from(args: argparse.Namespace) -> training.TrainConfig:
    return training.TrainConfig(
        arch=args.model,
        seq_len=args.sequence_length,
        horizon=args.horizon,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        dropout=args.dropout,
        batch_size=args.batch_size,
        num_epochs=args.num_epochs,
        optimizer=args.optimizer,
        lr=args.learning_rate,
        weight_decay=args.weight_decay,
        step_size=args.step_size,
        gamma=args.gamma,
        clip=args.clip,
        patience=args.patience,
        monitor=args.monitor,
        train_split=args.split[0],
        val_split=args.split[1],
        seed=args.seed,
        device="cuda" if args.use_cuda else args.device,
        num_threads=args.num_workers,
        save_every=args.save_every,
    )


class Bar:
    """tqdm over all batches of all epochs, with the last validation scores in the postfix."""

    def __init__(self, cfg: training.TrainConfig, enabled: bool) -> None:
        self.bar: tqdm | None = None
        self.enabled = enabled
        self.cfg = cfg

    def __call__(self, p: training.Progress) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = tqdm(
                total=p.num_batches * p.num_epochs,
                unit="batch",
                dynamic_ncols=True,
                initial=p.num_batches * (p.epoch - 1),
                file=sys.stderr,
            )
        done = p.num_batches * (p.epoch - 1) + p.batch
        self.bar.update(done - self.bar.n)
        post = {"epoch": p.epoch, "loss": f"{p.loss:.4f}"}
        if p.val is not None:
            post.update(auc=f"{p.val['auc']:.4f}", brier=f"{p.val['brier']:.4f}")
            self.bar.write(
                f"epoch {p.epoch}: train loss {p.loss:.4f}  val auc {p.val['auc']:.4f}  "
                f"brier {p.val['brier']:.4f} (base {p.val['base_brier']:.4f})  "
                f"log loss {p.val['log_loss']:.4f}"
            )
        self.bar.set_postfix(post, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def main(argv: list[str] | None = None, *, prog: str = "train.py") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    source = args.data or args.source
    if source is None:
        parser.error("give the data: a CSV path, 'synthetic', or exchange:SYMBOL")
    if args.data and args.source:
        parser.error("give the data once: as the second argument or as --source, not both")
    try:
        cfg = config_from(args)
        loaded = load_ticks(source, store_path=args.store, start=args.start, end=args.end, seed=args.seed)
        print(f"{len(loaded.ticks):,} ticks from {source}", file=sys.stderr)
        state = Path(args.state_file).absolute() if args.state_file else None  # errors name it whole
        if cfg.num_epochs == 0:
            return evaluate_only(state, loaded.ticks, cfg)
        bar = Bar(cfg, enabled=not args.quiet)
        try:
            result = training.fit(
                loaded.ticks,
                cfg,
                data_info=loaded.info,
                progress=bar,
                state_path=state,
                resume=state if state and state.exists() else None,
            )
        finally:
            bar.close()
        path = result.save(args.out)
    except KeyboardInterrupt:
        print("interrupted; the last state file (if any) can be resumed with --state_file", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, checkpoint.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # --out not writable, disk full: say which path and why
        print(
            f"error: could not write {e.filename or args.out}: {e.strerror or e}; "
            "choose another --out or free some space",
            file=sys.stderr,
        )
        return 2
    print(summary(result, path))
    for w in result.warnings:  # after the tables, where a person reading them will see it
        print(f"warning: {w}", file=sys.stderr)
    return 0


def evaluate_only(state: Path | None, ticks: TickArrays, cfg: training.TrainConfig) -> int:
    if state is None:
        raise ValueError("--num_epochs 0 evaluates a model: give it with --state_file")
    model = checkpoint.load(state, checkpoint.best_device(cfg.device))
    part = "test" if cfg.train_split + cfg.val_split < 1 - 1e-9 else "val"
    rows = evaluation.compare([model], ticks, train=cfg.train_split, val=cfg.val_split, part=part)
    print(f"{part} split of {len(ticks):,} ticks")
    print(evaluation.format_table(rows))
    return 0


def summary(result: training.FitResult, path: Path) -> str:
    m = result.meta
    rows = [evaluation.Row(f"{part}", scores) for part, scores in m["metrics"].items()]
    lines = [
        "",
        f"model    {m['id']}  ({m['arch']}, L={m['seq_len']}, {m['hparams']})",
        f"saved    {path}",
        f"epochs   {m['epochs']} run, best {m['best_epoch']} ({result.stop_reason}), "
        f"{m['train_seconds']:.1f} s",
        f"decision rise if p >= {m['threshold']:.4f} (the training base rate)",
        "",
        evaluation.format_table(rows),
    ]
    hist = [
        "",
        "| epoch | train loss | val auc | val brier | val log loss | seconds |",
        "|------:|-----------:|--------:|----------:|-------------:|--------:|",
    ]
    for h in result.history:
        v = h["val"]
        flag = " *" if h["epoch"] == m["best_epoch"] else ""
        hist.append(
            f"| {h['epoch']:5d} | {h['train_loss']:10.4f} | {v['auc']:7.4f} | "
            f"{v['brier']:9.4f} | {v['log_loss']:12.4f} | {h['seconds']:6.1f}{flag} |"
        )
    return "\n".join(lines + hist)


if __name__ == "__main__":
    raise SystemExit(main())
