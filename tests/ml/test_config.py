"""One training config: the API schema, the CLI flags and the checkpoint all derive from
app/ml/config.py and agree with it on every setting (name, default, bounds), and a setting
added there shows up in all three."""

from __future__ import annotations

import inspect
import math
from dataclasses import replace

import pytest
from pydantic import ValidationError

from app.api.schemas import TrainConfigIn, TrainRequest
from app.cli import train as cli
from app.market.sources import synthetic
from app.ml import checkpoint, metrics, nets, training
from app.ml.config import (
    API_SETTINGS,
    ARCH_NAMES,
    BY_NAME,
    CLI_SETTINGS,
    DEFAULTS,
    SETTINGS,
    Setting,
    TrainConfig,
)
from app.services.jobs.spec import InvalidJobSpec, JobSpec, validate_spec

# Every setting away from its default, each within its bounds: what a run records is then
# visibly this config and not the defaults.
CUSTOM = TrainConfig(
    arch="GRU",
    seq_len=16,
    horizon=2,
    target="event",
    hidden_size=8,
    num_layers=3,
    dropout=0.2,
    bins=16,
    recent=3,
    members=2,
    batch_size=128,
    num_epochs=1,
    optimizer="adam",
    lr=0.002,
    weight_decay=0.02,
    momentum=0.8,
    schedule="step",
    step_size=2,
    gamma=0.7,
    clip=2.0,
    patience=1,
    calibration="platt",
    threshold_rule="ppv:0.4",
    monitor="brier",
    train_split=0.5,
    val_split=0.3,
    seed=7,
    device="cpu",
    num_threads=1,
    save_every=1,
    eval_batch_size=512,
    progress_every=3,
)


def api_schema() -> dict:
    return TrainConfigIn.model_json_schema()["properties"]


def parser_actions() -> dict:
    return {a.dest: a for a in cli.build_parser()._actions}


def test_custom_config_differs_from_the_defaults_everywhere() -> None:
    assert all(getattr(CUSTOM, s.name) != s.default for s in SETTINGS), "make CUSTOM differ"


# ---------------------------------------------------------------- one set of names


def test_the_api_the_cli_and_the_checkpoint_carry_the_config_s_settings() -> None:
    """A setting added to TrainConfig appears in the API (if `api`), on the command line (if
    `cli`) and in every checkpoint's record, with nothing else to edit."""
    assert set(api_schema()) == {s.name for s in API_SETTINGS}
    assert list(TrainConfigIn.model_fields) == [s.name for s in API_SETTINGS]  # the config's order
    actions = parser_actions()
    assert {s.name for s in CLI_SETTINGS} <= set(actions)
    not_settings = {
        "help",
        "data",
        "source",
        "also",
        "store",
        "start",
        "end",
        "split",
        "state_file",
        "use_cuda",
        "gap_s",  # where the data is cut (a property of the data, not of the model)
    }
    assert set(actions) - {s.name for s in CLI_SETTINGS} == not_settings | {"out", "quiet"}
    assert set(DEFAULTS.to_dict()) == {s.name for s in SETTINGS}


def test_the_api_exposes_what_it_exposed_before() -> None:
    """A snapshot, changed on purpose only: issue 13 added the target, TickNet's sizes, the
    schedule, the calibration and the threshold rule; nothing was taken away."""
    assert [s.name for s in API_SETTINGS] == [
        "arch", "seq_len", "horizon", "target", "hidden_size", "num_layers", "dropout", "bins",
        "recent", "members", "batch_size", "num_epochs", "optimizer", "lr", "weight_decay", "schedule",
        "step_size", "gamma", "clip", "patience", "calibration", "threshold_rule", "train_split",
        "val_split", "seed",
    ]  # fmt: skip


# ---------------------------------------------------------------- the API schema


@pytest.mark.parametrize("s", API_SETTINGS, ids=lambda s: s.name)
def test_api_schema_has_the_config_s_default_bounds_and_help(s: Setting) -> None:
    prop = api_schema()[s.name]
    assert prop["default"] == s.default and prop["description"] == s.param.help
    p = s.param
    assert (prop.get("minimum"), prop.get("exclusiveMinimum")) == (p.ge, p.gt)
    assert (prop.get("maximum"), prop.get("exclusiveMaximum")) == (p.le, p.lt)
    assert prop.get("enum") == (list(s.choices) or None)
    assert prop["type"] == {int: "integer", float: "number", str: "string"}[s.kind]


def edges(s: Setting) -> list[object]:
    """Values at and just past each bound, and the kinds of value no setting takes."""
    p, step = s.param, (1 if s.kind is int else 1e-9)
    out: list[object] = [True, None, "1", math.nan, math.inf, -math.inf]
    for bound, inside in ((p.ge, 0), (p.gt, step), (p.le, 0), (p.lt, -step)):
        if bound is not None:
            out += [bound + inside, bound - step, bound + step]
    if s.kind is int:
        out.append(float(s.default))
    out += list(s.choices) + [c.lower() for c in s.choices] + ["nope"]
    return out


def accepted_by_config(name: str, value: object) -> bool:
    try:
        TrainConfig(**{name: value, **({"val_split": 0.01} if name == "train_split" else {})})
    except ValueError:
        return False
    return True


def accepted_by_api(name: str, value: object) -> bool:
    try:
        TrainRequest(config={name: value, **({"val_split": 0.01} if name == "train_split" else {})})
    except ValidationError:
        return False
    return True


# Spellings of threshold rules: a grammar (metrics.parse_threshold_rule), not a list of choices.
RULES = ["f1", "F1", " base_rate ", "ppv:0.6", "PPV:.6", "fixed:0.5", "ppv:1", "fixed:0", "ppv:x", "f2", ""]
GRAMMARS = {"threshold_rule"}  # settings whose values a `canonical` function parses


@pytest.mark.parametrize("s", [s for s in API_SETTINGS if s.name not in GRAMMARS], ids=lambda s: s.name)
def test_the_api_and_the_config_accept_the_same_values(s: Setting) -> None:
    """The bounds are the config's for every entry point; only an architecture's other
    spellings ('gru', the command line's) are the config's alone."""
    for value in edges(s):
        spelled = s.name == "arch" and isinstance(value, str) and value.lower() in map(str.lower, ARCH_NAMES)
        expected = accepted_by_config(s.name, value)
        assert accepted_by_api(s.name, value) == (expected and not (spelled and value not in ARCH_NAMES)), (
            value
        )


def refused_before_queueing(name: str, value: object) -> bool:
    """What the API does with a request its schema passed: the job's check, before any queue."""
    spec = JobSpec(exchange="synthetic", symbol="BTC-USD", start=None, end=None, config={name: value})
    try:
        validate_spec(spec)
    except InvalidJobSpec:
        return True
    return False


@pytest.mark.parametrize("s", [s for s in API_SETTINGS if s.name in GRAMMARS], ids=lambda s: s.name)
def test_a_rule_the_config_refuses_is_refused_before_a_job_is_queued(s: Setting) -> None:
    """The schema takes a rule as a string and the config parses it: every rule the config
    takes passes the API, and every one it refuses is refused before anything is queued."""
    for value in edges(s) + RULES:
        if accepted_by_config(s.name, value):
            assert accepted_by_api(s.name, value), value
        else:
            assert not accepted_by_api(s.name, value) or refused_before_queueing(s.name, value), value


def test_threshold_rules_are_kept_in_their_canonical_spelling() -> None:
    spelled = {
        r: TrainConfig(threshold_rule=r).threshold_rule
        for r in RULES
        if accepted_by_config("threshold_rule", r)
    }
    assert spelled == {
        "f1": "f1",
        "F1": "f1",
        " base_rate ": "base_rate",
        "ppv:0.6": "ppv:0.6",
        "PPV:.6": "ppv:0.6",
        "fixed:0.5": "fixed:0.5",
    }
    with pytest.raises(ValueError, match="threshold rule 'ppv:1' not understood"):
        TrainConfig(threshold_rule="ppv:1")


def test_the_splits_are_checked_together_once_with_the_api_s_words() -> None:
    with pytest.raises(ValueError, match=r"^train_split \+ val_split must be <= 1$"):
        TrainConfig(train_split=0.8, val_split=0.4)
    with pytest.raises(ValidationError, match=r"config\.train_split \+ config\.val_split must be <= 1"):
        TrainRequest(config={"train_split": 0.8, "val_split": 0.4})
    assert TrainConfig(train_split=0.7, val_split=0.3).val_split == 0.3


# ---------------------------------------------------------------- the config's own checks


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"seq_len": True}, "seq_len must be an integer in 2..512, got True"),
        ({"seq_len": 1}, "seq_len must be an integer in 2..512, got 1"),
        ({"batch_size": 256.0}, "batch_size must be an integer in 2..65536"),
        ({"lr": math.nan}, "lr must be a number in (0, 10], got nan"),
        ({"clip": math.inf}, "clip must be a number in [0, 1000], got inf"),
        ({"dropout": False}, "dropout must be a number in [0, 1)"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of adam, adamw, sgd, got 'rmsprop'"),
        ({"monitor": "f1"}, "monitor must be one of auc, accuracy, ppv, npv, brier, log_loss, loss"),
        ({"num_threads": 0}, "num_threads must be an integer >= 1, or None, got 0"),
        ({"device": 3}, "device must be a string, got 3"),
        ({"arch": "Transformer"}, "unknown architecture 'Transformer'; choose one of"),
        ({"bogus": 1, "extra": 2}, "unknown training setting(s) 'bogus', 'extra'; known: arch, batch_size"),
    ],
)
def test_a_bad_setting_is_named_with_its_rule(values: dict, words: str) -> None:
    with pytest.raises(ValueError) as e:
        TrainConfig.from_dict(values)
    assert words in str(e.value)


def test_numbers_are_kept_as_their_kind_and_archs_by_their_own_name() -> None:
    cfg = TrainConfig.from_dict({"lr": 1, "gamma": 1, "arch": "RNNLinear"})
    assert isinstance(cfg.lr, float) and isinstance(cfg.gamma, float) and cfg.arch == "LSTM"
    with pytest.raises(ValueError, match="config must be an object"):
        TrainConfig.from_dict([("lr", 1)])  # type: ignore[arg-type]


def test_choices_come_from_the_code_that_uses_them() -> None:
    assert set(ARCH_NAMES) == set(nets.ARCHS) | set(nets.ALIASES)
    assert BY_NAME["monitor"].choices == tuple(metrics.HIGHER_IS_BETTER)
    assert BY_NAME["optimizer"].choices == ("adam", "adamw", "sgd")


def test_nets_build_takes_its_sizes_from_the_caller() -> None:
    params = inspect.signature(nets.build).parameters
    assert params["hidden_size"].default is inspect.Parameter.empty
    assert params["num_layers"].default is inspect.Parameter.empty


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize("s", [s for s in CLI_SETTINGS if s.name != "arch"], ids=lambda s: s.name)
def test_every_flag_has_the_config_s_default_and_help(s: Setting) -> None:
    action = parser_actions()[s.name]
    assert action.option_strings == [s.flag] and action.default == s.default
    assert action.help.startswith(s.param.help)
    assert action.choices == (s.choices or None)


def test_the_split_flag_holds_both_split_defaults() -> None:
    assert parser_actions()["split"].default == (DEFAULTS.train_split, DEFAULTS.val_split)
    assert cli.config_from(cli.build_parser().parse_args([DEFAULTS.arch])) == TrainConfig()
    assert cli.config_from(cli.build_parser().parse_args(["CNN"])) == replace(DEFAULTS, arch="CNN")
    whole = cli.config_from(cli.build_parser().parse_args(["CNN", "--split", "0.8"]))
    assert (whole.train_split, whole.val_split) == (0.8, pytest.approx(0.2))  # no test part


def argv_for(cfg: TrainConfig) -> list[str]:
    argv = [cfg.arch, "--split", f"{cfg.train_split},{cfg.val_split}"]
    for s in CLI_SETTINGS:
        if s.name != "arch":
            argv += [str(s.flag), str(getattr(cfg, s.name))]
    return argv


def from_command_line(cfg: TrainConfig) -> TrainConfig:
    """`cfg` through `tickcast train`'s flags; the settings it has no flag for are the worker's
    and keep their defaults."""
    return cli.config_from(cli.build_parser().parse_args(argv_for(cfg)))


def test_the_command_line_builds_the_same_config() -> None:
    from_cli = from_command_line(CUSTOM)
    for s in SETTINGS:
        expected = getattr(CUSTOM, s.name) if s.param.cli or s.name.endswith("_split") else s.default
        assert getattr(from_cli, s.name) == expected, s.name


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [
        ("--sequence_length", "1", "argument --sequence_length: must be an integer in 2..512, got 1"),
        ("--batch_size", "1.5", "argument --batch_size: must be an integer in 2..65536, got '1.5'"),
        ("--learning_rate", "nan", "argument --learning_rate: must be a number in (0, 10], got nan"),
        ("--num_workers", "0", "argument --num_workers: must be an integer >= 1, got 0"),
        ("--num_epochs", "1001", "argument --num_epochs: must be an integer in 1..1000, got 1001"),
        ("--monitor", "f1", "argument --monitor: invalid choice: 'f1'"),
    ],
)
def test_an_out_of_bounds_flag_is_a_usage_error(flag: str, value: str, words: str, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        cli.build_parser().parse_args(["CNN", flag, value])
    err = capsys.readouterr().err
    assert e.value.code == 2 and words in err and "usage:" in err and "Traceback" not in err


def test_num_epochs_zero_is_a_command_line_mode_not_a_setting() -> None:
    args = cli.build_parser().parse_args(["CNN", "--num_epochs", "0"])
    assert args.num_epochs == 0
    with pytest.raises(ValueError, match="num_epochs must be an integer in 1..1000"):
        cli.config_from(args)


# ---------------------------------------------------------------- the checkpoint


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> checkpoint.Model:
    ticks = synthetic.generate(2000, seed=4)
    result = training.fit(ticks, CUSTOM)
    return checkpoint.load(result.save(tmp_path_factory.mktemp("models")))


def test_a_checkpoint_records_every_setting_and_reads_back_the_same_config(written) -> None:
    recorded = written.meta.train
    assert recorded is not None and list(recorded) == [s.name for s in SETTINGS]
    assert TrainConfig.from_dict(recorded) == CUSTOM
    assert written.meta.hparams == CUSTOM.hparams()
    assert (written.meta.arch, written.meta.seq_len, written.meta.horizon) == ("GRU", 16, 2)
    assert written.meta.target == written.spec.target == "event"
    assert tuple(written.meta.features) == written.spec.names == CUSTOM.feature_names()
    assert (written.meta.threshold_rule, written.calibrator.kind) == ("ppv:0.4", "platt")


def test_the_api_the_cli_and_the_checkpoint_agree_on_every_setting(written) -> None:
    """The same run asked for through the API (its settings; the rest are the worker's), on
    the command line, and read back from its checkpoint: one config."""
    from_api = TrainConfigIn(**{s.name: getattr(CUSTOM, s.name) for s in API_SETTINGS}).model_dump()
    worker_side = {s.name: getattr(CUSTOM, s.name) for s in SETTINGS if not s.param.api}
    command_line_less = {s.name: getattr(CUSTOM, s.name) for s in SETTINGS if not s.param.cli}
    from_cli = replace(from_command_line(CUSTOM), **command_line_less)
    from_file = TrainConfig.from_dict(written.meta.train or {})
    assert TrainConfig.from_dict({**from_api, **worker_side}) == from_cli == from_file == CUSTOM
