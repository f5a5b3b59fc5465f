"""Train a next-tick rise classifier: the ancestor's `train.py`, kept and grown.

    python scripts/train.py CNN ticks.csv      (or: tickcast train CNN ticks.csv)
    python scripts/train.py LSTM synthetic --num_epochs 5
    python scripts/train.py GRU bitstamp:BTC-USD --store data/tickcast.db
    python scripts/train.py TickNet a.csv --also b.csv --split 0.75,0.25   (two markets, no test part)

Every ancestor flag still works; the defaults are the ones that train well
(the ancestor's SGD at lr=4 diverges). A stored market's or a CSV's ticks are cut
where no trade came for --gap_s seconds or trade ids are missing, as a training job
cuts them, so that no window spans a gap.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm  # type: ignore[import-untyped]  # tqdm ships no type information

from app.cli import HelpFormatter
from app.market.loading import Loaded, load_ticks
from app.market.store import DEFAULT_PATH
from app.market.ticks import TickArrays
from app.ml import checkpoint, evaluation, training
from app.ml.config import BY_NAME, CLI_SETTINGS, DEFAULTS, Setting, TrainConfig, check_splits
from app.services.coverage import split_for_training
from app.settings import Settings

D = DEFAULTS
# Where each setting's flag is listed in --help: the ancestor's flags, then the ones added since.
ANCESTOR = {
    "seq_len",
    "batch_size",
    "num_layers",
    "hidden_size",
    "save_every",
    "num_epochs",
    "optimizer",
    "lr",
    "weight_decay",
    "step_size",
    "gamma",
    "num_threads",
}
# Values a flag takes beyond its setting's bounds, each a mode of the command line rather than a
# setting: --num_epochs 0 evaluates --state_file and trains nothing (handled before any config).
MODES: dict[str, tuple[Any, ...]] = {"num_epochs": (0,)}
MODE_HELP = {"num_epochs": "; 0 evaluates --state_file only"}
GAP_S: float = Settings.model_fields["gap_s"].default  # the service's, so a job and this cut alike


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def parse_split(text: str) -> tuple[float, float]:
    """'0.6,0.2' -> train 0.6, validation 0.2, test the rest; '0.8' -> validation 0.2, no test."""
    try:
        parts = [float(x) for x in text.split(",")]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--split takes TRAIN[,VAL] fractions, got {text!r}") from e
    if len(parts) == 1:
        parts.append(1.0 - parts[0])
    rule = BY_NAME["train_split"].rule().removeprefix("a number ")
    try:
        if len(parts) != 2:
            raise ValueError("one or two fractions")
        train, val = BY_NAME["train_split"].check(parts[0]), BY_NAME["val_split"].check(parts[1])
        check_splits(train, val)
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"--split takes TRAIN[,VAL] fractions {rule} summing to <= 1, got {text!r}"
        ) from e
    return train, val


def flag_type(s: Setting) -> Callable[[str], Any]:
    """The flag's argparse type: the text as the setting's kind, within its bounds (or a mode)."""

    def parse(text: str) -> Any:
        try:
            value = s.kind(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"must be {s.rule()}, got {text!r}") from e
        if value in MODES.get(s.name, ()):
            return value
        try:
            return s.check(value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(
                str(e) if s.param.canonical else f"must be {s.rule()}, got {text}"
            ) from e

    return parse


def add_setting(group: argparse._ActionsContainer, s: Setting) -> None:
    """One setting's flag (or positional), its help and default from the config's declaration."""
    assert s.flag is not None
    if not s.flag.startswith("-"):
        group.add_argument(s.name, metavar=s.flag, help=f"{s.param.help} ({s.rule()})")
        return
    kw: dict[str, Any] = {
        "dest": s.name,
        "default": s.default,
        "help": s.param.help + MODE_HELP.get(s.name, ""),
    }
    if s.choices:
        kw["choices"] = s.choices
    elif s.kind is not str or s.param.canonical is not None:
        kw.update(type=flag_type(s), metavar=s.flag.lstrip("-").upper())
    group.add_argument(s.flag, **kw)


def build_parser(prog: str = "train.py") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    add_setting(p, BY_NAME["arch"])
    p.add_argument(
        "data",
        nargs="?",
        default=None,
        help="a CSV file, 'synthetic[:N]', or a stored market exchange:SYMBOL (same as --source)",
    )
    p.add_argument("--source", default=None, help="the data, if not given as the second argument")
    p.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="DATA",
        help="another market's ticks to learn from at the same time, split in time order on "
        "its own (repeatable; the features are scale-free) (default: none)",
    )
    p.add_argument(
        "--store",
        default=str(DEFAULT_PATH),
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
    g2 = p.add_argument_group("new flags")
    for s in CLI_SETTINGS:
        if s.name != "arch":
            add_setting(g if s.name in ANCESTOR else g2, s)
    g.add_argument(
        "--state_file",
        default=None,
        help="resumable checkpoint: resumed from if it exists, written every --save_every "
        "epochs and at each best epoch; with --num_epochs 0, the model to evaluate "
        "(default: none, not resumable)",
    )
    g.add_argument("--use_cuda", action="store_true", help="same as --device cuda")
    g2.add_argument(
        "--out",
        default="models",
        help="folder for the finished model file, relative to the current directory",
    )
    add_gap_s(g2)
    g2.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def add_gap_s(group: argparse._ActionsContainer) -> None:
    group.add_argument(
        "--gap_s",
        type=positive_seconds,
        default=GAP_S,
        metavar="SECONDS",
        help="cut a stored market's or a CSV's ticks where no trade came for longer than this, "
        "and where trade ids that run one by one are missing, so that no training window spans "
        "a gap (generated synthetic ticks are not cut)",
    )


def config_from(args: argparse.Namespace) -> TrainConfig:
    """The run's settings from the parsed flags: ValueError for a bad one (an unknown ARCH)."""
    values = {s.name: getattr(args, s.name) for s in CLI_SETTINGS}
    values["train_split"], values["val_split"] = args.split
    if args.use_cuda:
        values["device"] = "cuda"
    return TrainConfig.from_dict(values)


class Bar:
    """tqdm over all batches of all epochs, with the last validation scores in the postfix."""

    def __init__(self, cfg: TrainConfig, enabled: bool) -> None:
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
        cfg = None if args.num_epochs == 0 else config_from(args)  # 0: evaluate, no settings
        where = {"store_path": args.store, "start": args.start, "end": args.end, "seed": args.seed}
        loaded = load_ticks(source, **where, ids=cfg is not None)
        print(f"{len(loaded.ticks):,} ticks from {source}", file=sys.stderr)
        also = [load_ticks(a, **where, ids=True) for a in args.also]
        for a, more in zip(args.also, also, strict=True):
            print(f"{len(more.ticks):,} ticks from {a}", file=sys.stderr)
        state = Path(args.state_file).absolute() if args.state_file else None  # errors name it whole
        if cfg is None:
            return evaluate_only(state, loaded.ticks, "cuda" if args.use_cuda else args.device, args.split)
        series, info = cut_at_gaps(cfg, [source, *args.also], [loaded, *also], args.gap_s)
        result = train(cfg, series, info, state, quiet=args.quiet)
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


def cut_at_gaps(
    cfg: TrainConfig, names: list[str], loaded: list[Loaded], gap_s: float
) -> tuple[list[TickArrays], dict[str, Any]]:
    """Each source's ticks cut at its gaps, as a training job cuts a stored market's (generated
    ticks stay whole), and the checkpoint's `data`: the first source's, the others' under "also"."""
    series: list[TickArrays] = []
    infos: list[dict[str, Any]] = []
    for name, one in zip(names, loaded, strict=True):
        if one.info["source"] == "synthetic":
            series.append(one.ticks)
            infos.append(one.info)
            continue
        todo = "train on a longer range, or raise --gap_s"
        split = split_for_training(one.ticks, cfg, gap_s, what=name, todo=todo)
        if split.gaps:
            print(
                f"{name}: cut at {split.gaps:,} gaps (over {gap_s:g} s, or trade ids missing) into "
                f"{len(split.series):,} series; {split.windows_removed:,} windows fewer",
                file=sys.stderr,
            )
        series += split.series
        infos.append({**one.info, **split.info(gap_s)})
    return series, ({**infos[0], "also": infos[1:]} if len(infos) > 1 else infos[0])


def train(
    cfg: TrainConfig, series: list[TickArrays], info: dict[str, Any], state: Path | None, *, quiet: bool
) -> training.FitResult:
    """fit() with a progress bar, resuming from `state` when that file exists."""
    bar = Bar(cfg, enabled=not quiet)
    try:
        return training.fit(
            series,
            cfg,
            data_info=info,
            progress=bar,
            state_path=state,
            resume=state if state and state.exists() else None,
        )
    finally:
        bar.close()


def evaluate_only(state: Path | None, ticks: TickArrays, device: str, split: tuple[float, float]) -> int:
    if state is None:
        raise ValueError("--num_epochs 0 evaluates a model: give it with --state_file")
    model = checkpoint.load(state, checkpoint.best_device(device))
    train_split, val_split = split
    part = "test" if train_split + val_split < 1 - 1e-9 else "val"
    result = evaluation.compare([model], ticks, split=split, part=part)
    print(f"{part} split of {len(ticks):,} ticks")
    print(evaluation.format_table(result.rows))
    for note in result.notes:
        print(f"note: {note}")
    return 0


def summary(result: training.FitResult, path: Path) -> str:
    m = result.meta
    rows = []
    for part, scores in m.metrics.items():  # each split: the baselines, then the model
        rows += [evaluation.Row(f"{part}: {name}", s) for name, s in m.baselines.get(part, {}).items()]
        rows.append(evaluation.Row(f"{part}: {m.id}", scores))
    cal = m.calibrator or {}
    lines = [
        "",
        f"model    {m.id}  ({m.arch}, L={m.seq_len}, target {m.target}, {m.hparams})",
        f"saved    {path}",
        f"epochs   {m.epochs} run, best {m.best_epoch} ({result.stop_reason}), "
        f"{m.train_seconds or 0.0:.1f} s",
        f"calibrated by {cal.get('kind', 'its logit offset')}, fitted on the validation split",
        f"decision rise if p >= {m.threshold:.4f} (rule {m.threshold_rule}, chosen on the validation split)",
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
        flag = " *" if h["epoch"] == m.best_epoch else ""
        hist.append(
            f"| {h['epoch']:5d} | {h['train_loss']:10.4f} | {v['auc']:7.4f} | "
            f"{v['brier']:9.4f} | {v['log_loss']:12.4f} | {h['seconds']:6.1f}{flag} |"
        )
    return "\n".join(lines + hist)


if __name__ == "__main__":
    raise SystemExit(main())
