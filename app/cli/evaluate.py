"""Score saved models on data's test split, beside the references they must beat.

    python scripts/evaluate.py models/cnn-....pt ../shared/data/bitstamp_btcusd_2018-08.csv
    python scripts/evaluate.py models/*.pt synthetic --split 0.6,0.2
    tickcast evaluate models/*.pt synthetic      (the same command)

Rows: the base rate (a constant), the last-move heuristic (rise rate after an
up, down or flat tick), a logistic regression on the same windows, then each
model. All references are fitted on the training part of the same split.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.cli import HelpFormatter
from app.cli.train import parse_split
from app.market.loading import load_ticks
from app.market.store import DEFAULT_PATH
from app.ml import checkpoint, evaluation
from app.ml.config import DEFAULTS
from app.paths import tried


def build_parser(prog: str = "evaluate.py") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="model files (.pt)")
    p.add_argument("data", metavar="DATA", help="a CSV file, 'synthetic[:N]', or exchange:SYMBOL")
    p.add_argument(
        "--split",
        type=parse_split,
        default=(DEFAULTS.train_split, DEFAULTS.val_split),
        help="TRAIN[,VAL] fractions as in training "
        f"(default: {DEFAULTS.train_split:g},{DEFAULTS.val_split:g})",
    )
    p.add_argument("--part", choices=("test", "val"), default="test", help="which split to score")
    p.add_argument(
        "--store",
        default=str(DEFAULT_PATH),
        help="tick store for exchange:SYMBOL data, relative to the current directory",
    )
    p.add_argument("--device", default="cpu", help="auto (cuda, then mps, then cpu), cpu, cuda, mps")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seed of a synthetic source")
    return p


def main(argv: list[str] | None = None, *, prog: str = "evaluate.py") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        missing = [c for c in args.checkpoints if not Path(c).is_file()]
        if missing:
            raise FileNotFoundError("no such model file: " + "; ".join(tried(c) for c in missing))
        device = checkpoint.best_device(args.device)
        models = [checkpoint.load(Path(c).absolute(), device) for c in args.checkpoints]
        ticks = load_ticks(args.data, store_path=args.store, seed=args.seed).ticks
        rows = evaluation.compare(models, ticks, train=args.split[0], val=args.split[1], part=args.part)
    except (ValueError, FileNotFoundError, checkpoint.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"{args.part} split of {len(ticks):,} ticks from {args.data} (split {args.split[0]:g}/"
        f"{args.split[1]:g}); probabilities are calibrated, decisions at each row's threshold"
    )
    print(evaluation.format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
