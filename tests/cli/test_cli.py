"""The `tickcast` command: its subcommands are the scripts' own code and parsers.

Runs app.cli.main(argv) in process (the console script calls exactly that), plus
one `python -m app.cli --help` to check the command starts from a shell.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import socket
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import app.cli
from app.cli import COMMANDS
from app.ml import checkpoint

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = {"train": "train.py", "evaluate": "evaluate.py", "fetch": "fetch_ticks.py"}
KEY_FLAGS = {
    "serve": [],
    "train": ["ARCH", "--num_epochs", "--hidden_size", "--split", "--state_file", "--out", "--quiet"],
    "evaluate": ["CHECKPOINT", "DATA", "--split", "--part", "--store"],
    "fetch": ["exchange", "symbol", "--start", "--end", "--store", "--csv", "--set", "--max-pages"],
}


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(
        f"tickcast_cli_test_{name}", REPO / "scripts" / SCRIPTS[name]
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as e:
        app.cli.main(argv)
    return e.value.code


def options(parser: argparse.ArgumentParser) -> list[tuple]:
    return [(tuple(a.option_strings), a.dest, a.nargs, a.default, a.choices, a.help) for a in parser._actions]


def test_entry_point_is_app_cli_main() -> None:
    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "tickcast"]
    assert ep.value == "app.cli:main"


def test_top_level_help_lists_every_subcommand(capsys) -> None:
    assert exit_code(["--help"]) == 0
    out = capsys.readouterr().out
    assert set(COMMANDS) == {"serve", "train", "evaluate", "fetch"}
    for name, (_, help_) in COMMANDS.items():
        assert name in out
        assert help_.split()[0] in out


def test_python_m_app_cli_help_from_a_shell() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert r.returncode == 0, r.stderr
    assert all(name in r.stdout for name in COMMANDS)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_subcommand_help(name: str, capsys) -> None:
    assert exit_code([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: tickcast {name}")
    for flag in KEY_FLAGS[name]:
        assert flag in out, flag


def test_missing_or_unknown_command_is_a_usage_error(capsys) -> None:
    assert exit_code([]) == 2
    assert exit_code(["bogus"]) == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_scripts_and_subcommands_share_one_parser(name: str) -> None:
    script = load_script(name)
    module = app.cli.command_module(name)
    assert script.build_parser is module.build_parser
    # the parser the subcommand builds is the script's, flag for flag, help for help
    assert options(script.build_parser()) == options(module.build_parser(f"tickcast {name}"))
    assert script.build_parser().description == module.build_parser().description
    if name != "fetch":  # fetch's wrapper passes its own backfill (a test seam) to the same main
        assert script.main is module.main


def test_scripts_keep_their_importable_names() -> None:
    train = load_script("train")
    assert train.parse_split("0.7,0.1") == (0.7, 0.1)
    fetch = load_script("fetch")
    assert fetch.parse_time("2024-01-01") == 1704067200.0
    assert callable(fetch.backfill) and fetch.CSV_COLUMNS[0] == "time"


def test_serve_calls_app_main_serve(monkeypatch) -> None:
    import app.main

    calls = []
    monkeypatch.setattr(app.main, "serve", lambda: calls.append(1))
    assert app.cli.main(["serve"]) == 0
    assert calls == [1]


def test_train_then_evaluate_through_tickcast(tmp_path, capsys) -> None:
    from app.market.sources import synthetic
    from app.market.ticks import write_csv

    data = tmp_path / "ticks.csv"
    write_csv(synthetic.generate(1200, seed=5), data)
    out = tmp_path / "models"
    assert (
        app.cli.main(
            [
                "train",
                "CNN",
                str(data),
                "--num_epochs",
                "1",
                "--hidden_size",
                "8",
                "--num_layers",
                "1",
                "--sequence_length",
                "16",
                "--num_workers",
                "1",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    (model_file,) = out.glob("*.pt")
    model = checkpoint.load(model_file)
    assert model.meta.arch == "CNN" and model.meta.epochs == 1
    assert f"saved    {model_file}" in capsys.readouterr().out

    assert app.cli.main(["evaluate", str(model_file), str(data)]) == 0
    printed = capsys.readouterr().out
    assert "every window of 1,200 ticks" in printed and f"| {model_file.stem}" in printed
    # the base rate calls every window a rise: its NPV is undefined, shown as n/a and explained
    base = next(line for line in printed.splitlines() if line.startswith("| base_rate"))
    assert "n/a" in base and "nan" not in printed
    assert "n/a: undefined" in printed


def test_fetch_through_tickcast(tmp_path, capsys) -> None:
    from app.market.ticks import read_csv

    out_csv = tmp_path / "syn.csv"
    start, end = 1_700_000_000, 1_700_000_300
    assert (
        app.cli.main(
            [
                "fetch",
                "synthetic",
                "BTC-USD",
                "--start",
                str(start),
                "--end",
                str(end),
                "--csv",
                str(out_csv),
                "--quiet",
            ]
        )
        == 0
    )
    ticks = read_csv(out_csv)
    assert len(ticks) > 0 and ticks.time.min() >= start and ticks.time.max() < end
    assert "synthetic:BTC-USD" in capsys.readouterr().out


def test_bad_arguments_name_the_subcommand(capsys) -> None:
    assert exit_code(["train"]) == 2
    assert "usage: tickcast train" in capsys.readouterr().err


# ---------------------------------------------------------------- a command line that explains itself


def parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    return [(name, app.cli.command_module(name).build_parser(f"tickcast {name}")) for name in COMMANDS]


def shows_a_default(action: argparse.Action) -> bool:
    """Whether a reader needs the default spelled out: a value, not None, [] or an off flag."""
    return action.nargs != 0 and action.default not in (None, [], argparse.SUPPRESS)


def option_block(help_text: str, flag: str) -> str:
    """The lines --help prints for one option: its own line and the indented ones after it."""
    lines = help_text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"  {re.escape(flag)}\b", line))
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith(" " * 6):
            break
        block.append(line)
    return " ".join(" ".join(block).split())


@pytest.mark.parametrize("name,parser", parsers(), ids=list(COMMANDS))
def test_every_option_has_help_and_its_default(
    name: str, parser: argparse.ArgumentParser, monkeypatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    text = parser.format_help()
    for action in parser._actions:
        label = action.option_strings[0] if action.option_strings else action.metavar or action.dest
        assert action.help and action.help.strip(), f"{name} {label} has no help"
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        block = option_block(text, action.option_strings[0])
        if shows_a_default(action):
            shown = (
                action.default
                if not isinstance(action.default, tuple)
                else ",".join(f"{v:g}" for v in action.default)
            )
            assert f"(default: {shown})" in block, f"{name} {label}: {block}"
        else:
            assert "(default: None)" not in block and "(default: [])" not in block, block


def test_train_help_explains_the_flags_the_issue_named(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert exit_code(["train", "--help"]) == 0
    out = capsys.readouterr().out
    for flag, default in (
        ("--batch_size", "256"),
        ("--num_layers", "1"),
        ("--hidden_size", "32"),
        ("--optimizer", "adamw"),
        ("--learning_rate", "0.003"),
        ("--weight_decay", "0.01"),
        ("--threshold_rule", "f1"),
        ("--calibration", "auto"),
        ("--seed", "0"),
        ("--split", "0.6,0.2"),
    ):
        block = option_block(out, flag)
        assert f"(default: {default})" in block, block
        assert len(block.split()) > 4, block  # words of help, not only the flag and its default


# ---------------------------------------------------------------- errors that name the path tried


def test_a_missing_csv_is_named_by_its_full_path(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert app.cli.main(["train", "CNN", "ticks20k.csv", "--num_epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"no such CSV file: {tmp_path / 'ticks20k.csv'} (resolved from ticks20k.csv in {tmp_path})" in err
    absolute = tmp_path / "sub" / "nope.csv"
    assert app.cli.main(["evaluate", "x.pt", str(absolute)]) == 2
    err = capsys.readouterr().err
    assert f"no such model file: {tmp_path / 'x.pt'} (resolved from x.pt in {tmp_path})" in err


def test_a_missing_store_and_csv_source_file_are_named_in_full(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert app.cli.main(["train", "GRU", "binance:BTC-USD", "--num_epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert (
        f"no tick store at {tmp_path / 'data' / 'tickcast.db'} (resolved from data/tickcast.db in {tmp_path})"
    ) in err
    assert app.cli.main(["fetch", "csv", "BTC-USD", "--file", "old.csv", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"no such file: {tmp_path / 'old.csv'} (resolved from old.csv in {tmp_path})" in err
    assert not (tmp_path / "data").exists()  # a refused fetch creates no store


# ---------------------------------------------------------------- evaluate's undefined scores


def test_undefined_scores_read_n_a_with_a_footnote() -> None:
    from app.ml import evaluation

    rows = [
        evaluation.Row("base_rate", {"auc": 0.5, "ppv": 0.32, "npv": float("nan"), "n": 10.0}),
        evaluation.Row("cnn-1", {"auc": 0.61, "ppv": 0.4, "npv": 0.72, "n": 10.0}),
    ]
    table = evaluation.format_table(rows, ("auc", "ppv", "npv", "n"))
    base = next(line for line in table.splitlines() if line.startswith("| base_rate"))
    assert [c.strip() for c in base.split("|")[2:-1]] == ["0.5000", "0.3200", "n/a", "10"]
    assert "nan" not in table
    assert table.splitlines()[-1] == evaluation.FOOTNOTE and "NPV" in evaluation.FOOTNOTE
    # no undefined score, no footnote
    assert evaluation.FOOTNOTE not in evaluation.format_table(rows[1:], ("auc", "ppv", "npv", "n"))


# ---------------------------------------------------------------- a one-shot fetch that fails


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("dest", ["--store", "--csv"])
def test_fetch_without_network_says_to_re_run_not_to_wait_for_a_pull(
    dest, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"http://127.0.0.1:{closed_port()}"
    target = "t.db" if dest == "--store" else "t.csv"
    argv = [
        "fetch",
        "binance",
        "BTC-USD",
        "--base-url",
        url,
        dest,
        target,
        "--set",
        "retries=1",
        "--set",
        "backoff_s=0.01",
        "--quiet",
    ]
    assert app.cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "next pull" not in err and "will retry" not in err
    resume = (
        f"the store {tmp_path / 't.db'} (its cursor for binance:BTC-USD)"
        if dest == "--store"
        else str(tmp_path / "t.csv.cursor")
    )
    assert err.strip().splitlines()[-1] == (
        f"this run stored nothing; check the network and --base-url (now {url}), then "
        f"re-run the same command to resume: it continues from {resume}"
    )
    assert "error: binance: GET /api/v3/aggTrades failed after 2 attempts" in err
