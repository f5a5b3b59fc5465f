"""Score saved models on data, beside the references they must beat.

    python scripts/evaluate.py models/ticknet-....pt new.csv       every window of new data
    python scripts/evaluate.py models/*.pt synthetic --split 0.6,0.2   the test part of a split
    tickcast evaluate models/*.pt new.csv      (the same command)

By default DATA is taken for data the models never saw: every window of it is
scored, and the references (the base rate, the last-move rule, a logistic
regression and, with scikit-learn installed, a gradient-boosted tree) are fitted
on the first model's own training data (found from its metadata) or on
--baselines-from, split as its training was, their thresholds chosen on that
validation part. With --split, DATA is divided as in training and --part is
scored, the references fitted on its training part. Each model's reliability
table (10 bins) follows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.cli import HelpFormatter
from app.cli.train import parse_split
from app.database import is_postgres
from app.market.backends import store_errors
from app.market.loading import load_ticks
from app.market.store import DEFAULT_PATH
from app.market.ticks import TickArrays
from app.ml import checkpoint, evaluation, metrics
from app.ml.config import DEFAULTS
from app.paths import tried


def build_parser(prog: str = "evaluate.py") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="model files (.pt)")
    p.add_argument("data", metavar="DATA", help="a CSV file, 'synthetic[:N]', or exchange:SYMBOL")
    p.add_argument(
        "--split",
        type=parse_split,
        default=None,
        help="TRAIN[,VAL] fractions as in training: score --part of DATA only, the references "
        "fitted on its training part (default: none, every window of DATA is scored)",
    )
    p.add_argument(
        "--part", choices=("test", "val"), default="test", help="with --split: which part to score"
    )
    p.add_argument(
        "--baselines-from",
        default=None,
        metavar="DATA",
        help="the references' training data when DATA is new (default: the first model's own "
        "training data, where its metadata says how to find it)",
    )
    p.add_argument(
        "--store",
        default=str(DEFAULT_PATH),
        help="tick store for exchange:SYMBOL data, relative to the current directory",
    )
    p.add_argument("--device", default="cpu", help="auto (cuda, then mps, then cpu), cpu, cuda, mps")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seed of a synthetic source")
    return p


def training_data(model: checkpoint.Model, store: str) -> TickArrays | None:
    """The ticks the model was trained on, where its metadata says where they are and they are
    still there (a CSV path, the synthetic market, a stored market): its recorded time span."""
    d = model.meta.data
    source, start, end = d.get("source"), d.get("start_time"), d.get("end_time")
    if not isinstance(source, str) or not isinstance(start, int | float) or not isinstance(end, int | float):
        return None
    errors: tuple[type[Exception], ...] = (ValueError, FileNotFoundError, OSError, *_store_errors(source))
    try:
        if source == "synthetic":
            return load_ticks(f"synthetic:{int(d.get('n_ticks', 0))}", seed=int(d.get("seed", 0))).ticks
        if source.startswith("store:") and d.get("exchange") and d.get("symbol"):
            recorded = source.removeprefix("store:")
            # a PostgreSQL source is recorded without its password: the --store URL opens it
            path = (store if is_postgres(store) else None) if is_postgres(recorded) else recorded
            if path is None:
                return None
            spec = f"{d['exchange']}:{d['symbol']}"
            return load_ticks(spec, store_path=path, start=start, end=end + 1e-6).ticks
        return load_ticks(source, start=start, end=end + 1e-6).ticks
    except errors:
        return None


def _store_errors(source: str) -> tuple[type[Exception], ...]:
    recorded = source.removeprefix("store:")
    return store_errors(recorded) if source.startswith("store:") else ()


def main(argv: list[str] | None = None, *, prog: str = "evaluate.py") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        missing = [c for c in args.checkpoints if not Path(c).is_file()]
        if missing:
            raise FileNotFoundError("no such model file: " + "; ".join(tried(c) for c in missing))
        device = checkpoint.best_device(args.device)
        models = [checkpoint.load(Path(c).absolute(), device) for c in args.checkpoints]
        ticks = load_ticks(args.data, store_path=args.store, seed=args.seed).ticks
        reference = None
        if args.split is None:
            reference = (
                load_ticks(args.baselines_from, store_path=args.store, seed=args.seed).ticks
                if args.baselines_from
                else training_data(models[0], args.store)
            )
        result = evaluation.compare(models, ticks, split=args.split, part=args.part, reference=reference)
    except (ValueError, FileNotFoundError, checkpoint.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(_heading(args, len(ticks), reference))
    print(evaluation.format_table(result.rows))
    for note in result.notes:
        print(f"\nnote: {note}")
    for m in models:
        bins = result.reliability[m.id]
        ece = next(r.scores["ece"] for r in result.rows if r.name == m.id)
        rule = m.meta.threshold_rule or "base_rate"
        print(f"\nreliability of {m.id} (ECE {ece:.4f}; decisions at p >= {m.threshold:.4f}, rule {rule}):")
        print(metrics.format_reliability(bins))
    return 0


def _heading(args: argparse.Namespace, n_ticks: int, reference: TickArrays | None) -> str:
    if args.split is not None:
        split = f"{args.split[0]:g}/{args.split[1]:g}"
        where = f"the {args.part} split of {n_ticks:,} ticks from {args.data} (split {split})"
    else:
        fitted = (
            ""
            if reference is None
            else f"; references fitted on {len(reference):,} ticks of "
            + (args.baselines_from or "the model's training data")
        )
        where = f"every window of {n_ticks:,} ticks from {args.data}{fitted}"
    return f"{where}; probabilities are calibrated, decisions at each row's threshold"


if __name__ == "__main__":
    raise SystemExit(main())
