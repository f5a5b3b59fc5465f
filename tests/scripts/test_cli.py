"""The `tickcast` command: its subcommands are the scripts' own code and parsers.

Runs app.cli.main(argv) in process (the console script calls exactly that), plus
one `python -m app.cli --help` to check the command starts from a shell.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
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
    spec = importlib.util.spec_from_file_location(f"tickcast_cli_test_{name}",
                                                  REPO / "scripts" / SCRIPTS[name])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as e:
        app.cli.main(argv)
    return e.value.code


def options(parser: argparse.ArgumentParser) -> list[tuple]:
    return [(tuple(a.option_strings), a.dest, a.nargs, a.default, a.choices, a.help)
            for a in parser._actions]


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
    r = subprocess.run([sys.executable, "-m", "app.cli", "--help"], cwd=REPO, capture_output=True,
                       text=True, timeout=60, env={**os.environ, "PYTHONWARNINGS": "ignore"})
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
    assert app.cli.main(["train", "CNN", str(data), "--num_epochs", "1", "--hidden_size", "8",
                         "--num_layers", "1", "--sequence_length", "16", "--num_workers", "1",
                         "--quiet", "--out", str(out)]) == 0
    (model_file,) = out.glob("*.pt")
    model = checkpoint.load(model_file)
    assert model.meta["arch"] == "CNN" and model.meta["epochs"] == 1
    assert f"saved    {model_file}" in capsys.readouterr().out

    assert app.cli.main(["evaluate", str(model_file), str(data)]) == 0
    printed = capsys.readouterr().out
    assert "test split of 1,200 ticks" in printed and f"| {model_file.stem}" in printed


def test_fetch_through_tickcast(tmp_path, capsys) -> None:
    from app.market.ticks import read_csv

    out_csv = tmp_path / "syn.csv"
    start, end = 1_700_000_000, 1_700_000_300
    assert app.cli.main(["fetch", "synthetic", "BTC-USD", "--start", str(start), "--end", str(end),
                         "--csv", str(out_csv), "--quiet"]) == 0
    ticks = read_csv(out_csv)
    assert len(ticks) > 0 and ticks.time.min() >= start and ticks.time.max() < end
    assert "synthetic:BTC-USD" in capsys.readouterr().out


def test_bad_arguments_name_the_subcommand(capsys) -> None:
    assert exit_code(["train"]) == 2
    assert "usage: tickcast train" in capsys.readouterr().err
