"""The training settings, declared once.

Each setting is one field of `TrainConfig`: its default, and a `Param` with its bounds, its help
text, whether the HTTP API takes it and its command-line flag. Everything else derives from
these declarations: the API's request schema (`app/api/schemas.py`), the job spec
(`services/jobs/spec.py`), the `tickcast train` flags (`app/cli/train.py`), and the record of a
run in its checkpoint (`asdict`). Values are checked here, by the same declarations, whoever
builds a config, so adding a hyper-parameter is one field below and nothing else.

Bounds are the API's for every entry point: they keep one request (or one typo on the command
line) from occupying the machine for days, and `checkpoint` loads anything they allow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, NotRequired, TypedDict, get_args, get_origin, get_type_hints

from app.ml import features, metrics, nets

Number = int | float

# The names the API offers, each alias beside its architecture: CNN, LSTM, RNNLinear, GRU, PureRNN.
ARCH_NAMES = tuple(n for a in nets.ARCHS for n in (a, *(k for k, v in nets.ALIASES.items() if v == a)))


@dataclass(frozen=True)
class Param:
    """How one setting is bounded, explained and reached. The bounds are pydantic's (ge, gt, le,
    lt); `choices` restrict a string (a `Literal` annotation gives them too), and `canonical`
    resolves its spellings (an alias, any case) or raises ValueError saying what exists."""

    help: str
    ge: Number | None = None
    gt: Number | None = None
    le: Number | None = None
    lt: Number | None = None
    choices: tuple[str, ...] = ()
    canonical: Callable[[str], str] | None = None
    api: bool = True  # the HTTP API takes it (the rest are the command line's and the worker's)
    cli: bool = True  # `tickcast train` has a flag for it
    flag: str | None = None  # when not --<name>: the ancestor's names stay; no dashes: a positional
    # The API refuses NaN and infinities as such, before the bounds (its 422 says "finite");
    # every setting refuses them, this only picks the API's wording.
    finite: bool = False


def param(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field: `default`, with its `Param` in the field's metadata."""
    return field(default=default, metadata={"param": Param(help, **kw)})


class Hparams(TypedDict):
    """The sizes `nets.build` takes from a config (and a checkpoint records)."""

    hidden_size: int
    num_layers: int
    dropout: NotRequired[float]  # recurrent nets only: the CNN and PureRNN have no dropout
    bins: NotRequired[int]  # TickNet only
    recent: NotRequired[int]  # TickNet only
    ramped: NotRequired[int]  # TickNet only: the leading input columns it ramps
    members: NotRequired[int]  # TickNet only: an ensemble of this many (absent: one)


@dataclass(frozen=True)
class TrainConfig:
    """One training run's settings, checked when built: ValueError names the first bad one."""

    arch: str = param(
        "TickNet",
        "the network: TickNet (piecewise-linear inputs, a GRU and the last trades seen directly), "
        "a 1-D CNN, an LSTM (RNNLinear is the same), a GRU or a plain RNN",
        choices=ARCH_NAMES,
        canonical=nets.canonical_arch,
        flag="ARCH",
    )
    seq_len: int = param(
        32,
        "ticks in one input window; /predict then needs seq_len + 1 ticks",
        ge=2,
        le=512,
        flag="--sequence_length",
    )
    horizon: int = param(1, "predict a rise this many ticks (or events) ahead", ge=1, le=100)
    target: Literal["tick", "event"] = param(
        "tick",
        "tick: does the next trade print higher? event: trades sharing a timestamp (one taker "
        "order's fills) are merged first, so: does the next order print higher?",
    )
    hidden_size: int = param(32, "width of each hidden layer (channels for the CNN)", ge=1, le=1024)
    num_layers: int = param(1, "hidden layers", ge=1, le=16)
    dropout: float = param(
        0.1, "dropout rate between layers (TickNet: before its output), in [0, 1)", ge=0, lt=1
    )
    bins: int = param(64, "TickNet: piecewise-linear ramps per input column", ge=1, le=256)
    recent: int = param(2, "TickNet: the last rows of the window its head sees directly", ge=1, le=64)
    members: int = param(
        1,
        "TickNet: nets initialised apart and trained side by side, their logits averaged (a deep "
        "ensemble; this many times the training and scoring cost)",
        ge=1,
        le=16,
    )
    batch_size: int = param(256, "training windows per optimiser step", ge=2, le=65536)
    num_epochs: int = param(
        8, "passes over the training windows (fewer if early stopping ends it)", ge=1, le=1000
    )
    optimizer: Literal["adam", "adamw", "sgd"] = param("adamw", "the optimiser")
    lr: float = param(
        3e-3,
        "learning rate (the peak, with the one-cycle schedule)",
        gt=0,
        le=10,
        finite=True,
        flag="--learning_rate",
    )
    weight_decay: float = param(0.01, "L2 penalty (decoupled for adamw)", ge=0, le=1, finite=True)
    momentum: float = param(0.9, "momentum of the sgd optimiser", ge=0, lt=1, api=False)
    schedule: Literal["onecycle", "step"] = param(
        "onecycle", "learning rate: one cycle over all epochs (warm up, then anneal), or step cuts"
    )
    step_size: int = param(3, "step schedule: epochs between learning-rate cuts", ge=1, le=1000)
    gamma: float = param(0.5, "step schedule: factor of each learning-rate cut", gt=0, le=1)
    clip: float = param(1.0, "gradient-norm clipping; 0 turns it off", ge=0, le=1000, finite=True)
    patience: int = param(
        3,
        "stop after this many epochs without a gain in the monitored validation metric; 0 never stops early",
        ge=0,
        le=1000,
    )
    calibration: Literal["auto", "platt", "isotonic"] = param(
        "auto",
        "the calibrator fitted on the validation split: platt, isotonic, or auto (whichever "
        "scores the lower log loss across two halves of the validation split)",
    )
    threshold_rule: str = param(
        "f1",
        "how the decision threshold is chosen on the validation split: f1 (the best F1 of the "
        "rise calls), base_rate, ppv:X (the lowest threshold whose PPV reaches X) or fixed:X",
        canonical=metrics.parse_threshold_rule,
    )
    monitor: str = param(
        "log_loss",
        "the validation metric that picks the best epoch and stops early",
        choices=tuple(metrics.HIGHER_IS_BETTER),
        api=False,
    )
    train_split: float = param(0.6, "share of the windows (the oldest) to train on", gt=0, lt=1, cli=False)
    val_split: float = param(
        0.2,
        "share of the windows after those to validate on; the rest is the test split",
        gt=0,
        lt=1,
        cli=False,  # both splits are the command line's --split TRAIN[,VAL]
    )
    seed: int = param(0, "random seed: the same data and settings give the same model", ge=0, le=2**31 - 1)
    device: str = param("auto", "auto (cuda, then mps, then cpu), cpu, cuda, mps", api=False)
    num_threads: int | None = param(
        None,
        "CPU threads for torch (batches are gathered in place, so threads are where extra "
        "workers help) (default: torch's own choice)",
        ge=1,
        api=False,
        flag="--num_workers",
    )
    save_every: int = param(0, "epochs between state saves (0: best only)", ge=0, le=1000, api=False)
    eval_batch_size: int = param(
        4096, "windows per forward pass when scoring (memory, not results)", ge=1, api=False, cli=False
    )
    progress_every: int = param(20, "batches between progress reports", ge=1, api=False, cli=False)

    def __post_init__(self) -> None:
        for s in SETTINGS:
            object.__setattr__(self, s.name, s.check(getattr(self, s.name)))
        check_splits(self.train_split, self.val_split)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """A config from plain data (a job spec, a checkpoint's record); ValueError for a key that
        is no setting (naming the known ones) or a bad value."""
        if not isinstance(values, Mapping):
            raise ValueError("config must be an object of training settings")
        unknown = sorted((str(k) for k in values if k not in BY_NAME), key=str)
        if unknown:
            raise ValueError(
                f"unknown training setting(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(sorted(BY_NAME))}"
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def hparams(self) -> Hparams:
        """The keyword arguments of `nets.build` this config sets."""
        hp: Hparams = {"hidden_size": self.hidden_size, "num_layers": self.num_layers}
        if self.arch in ("LSTM", "GRU", "TickNet"):
            hp["dropout"] = self.dropout
        if self.arch == "TickNet":
            hp["bins"], hp["recent"] = self.bins, self.recent
            hp["ramped"] = features.default_ramped(self.target)
            if self.members > 1:
                hp["members"] = self.members
        return hp

    def feature_names(self) -> tuple[str, ...]:
        return features.default_features(self.target)


def check_splits(train: float, val: float, prefix: str = "") -> None:
    """The one rule across settings: validation follows training, the test split is the rest."""
    if train + val > 1:
        raise ValueError(f"{prefix}train_split + {prefix}val_split must be <= 1")


@dataclass(frozen=True)
class Setting:
    """One field of TrainConfig with what its annotation says: its kind and whether None is allowed."""

    name: str
    kind: type[int] | type[float] | type[str]
    optional: bool
    default: Any
    param: Param
    choices: tuple[str, ...]

    @property
    def flag(self) -> str | None:
        """The command-line flag (a positional's metavar), or None when the CLI has none."""
        return (self.param.flag or f"--{self.name}") if self.param.cli else None

    def rule(self) -> str:
        """What a value must be, in words: 'an integer in 2..512', 'a number in (0, 1)'."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.kind is str:
            return "a string"
        p = self.param
        what = "an integer" if self.kind is int else "a number"
        lo, hi = (p.ge if p.gt is None else p.gt), (p.le if p.lt is None else p.lt)
        if lo is not None and hi is not None:
            if self.kind is int and p.gt is None and p.lt is None:
                return f"{what} in {lo}..{hi}"
            return f"{what} in {'[' if p.gt is None else '('}{lo}, {hi}{']' if p.lt is None else ')'}"
        if lo is not None:
            return f"{what} {'>=' if p.gt is None else '>'} {lo}"
        return what if hi is None else f"{what} {'<=' if p.lt is None else '<'} {hi}"

    def check(self, value: object) -> Any:
        """`value` as the config keeps it (a float for a number, an architecture's own name), or
        ValueError. Booleans are no numbers, and NaN or infinities no value at all."""
        if value is None and self.optional:
            return None
        if self.kind is str:
            return self._check_str(value)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.error(value)
        if self.kind is int and not isinstance(value, int):
            raise self.error(value)
        number = float(value) if self.kind is float else value
        if not self.within(number):
            raise self.error(value)
        return number

    def _check_str(self, value: object) -> str:
        if not isinstance(value, str):
            raise self.error(value)
        if self.param.canonical is not None:
            return self.param.canonical(value)
        if self.choices and value not in self.choices:
            raise self.error(value)
        return value

    def within(self, v: Number) -> bool:
        p = self.param
        return not (
            (p.ge is not None and v < p.ge)
            or (p.gt is not None and v <= p.gt)
            or (p.le is not None and v > p.le)
            or (p.lt is not None and v >= p.lt)
        )

    def error(self, value: object) -> ValueError:
        rule = self.rule() + (", or None" if self.optional else "")
        return ValueError(f"{self.name} must be {rule}, got {repr(value)[:50]}")


def _settings() -> tuple[Setting, ...]:
    hints = get_type_hints(TrainConfig)
    out = []
    for f in fields(TrainConfig):
        hint = hints[f.name]
        args = get_args(hint)
        optional = type(None) in args
        choices: tuple[str, ...] = f.metadata["param"].choices
        if get_origin(hint) is Literal:
            kind, choices = str, tuple(args)
        else:
            kind = next(a for a in args if a is not type(None)) if optional else hint
        out.append(Setting(f.name, kind, optional, f.default, f.metadata["param"], choices))
    return tuple(out)


SETTINGS = _settings()
BY_NAME = {s.name: s for s in SETTINGS}
API_SETTINGS = tuple(s for s in SETTINGS if s.param.api)
CLI_SETTINGS = tuple(s for s in SETTINGS if s.param.cli)
DEFAULTS = TrainConfig()
