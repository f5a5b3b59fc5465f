"""The `tickcast` command: one subcommand per job, each the same code as its script.

    tickcast serve                    the HTTP service
    tickcast train ARCH DATA ...      = scripts/train.py
    tickcast evaluate CKPT... DATA    = scripts/evaluate.py
    tickcast fetch EXCHANGE SYMBOL    = scripts/fetch_ticks.py

A subcommand's module is imported only when it runs, so `tickcast --help` and
`tickcast serve` do not load torch.
"""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType

# name -> (module under app.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("serve", "start the HTTP service (settings from TICKCAST_* and .env)"),
    "train": ("train", "train a CNN/LSTM/GRU next-tick classifier (= scripts/train.py)"),
    "evaluate": ("evaluate", "score saved models against the baselines (= scripts/evaluate.py)"),
    "fetch": ("fetch", "backfill one market's trades into the store or a CSV (= scripts/fetch_ticks.py)"),
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring's layout kept, and each option's default after its help.

    A default that says nothing (None, an empty list, an on/off flag's False) is left
    out; such an option's help says what happens without it. Help that already names
    its default in its own words ("(default: 0.6,0.2)") is shown as written.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or "(default" in text
            or action.nargs == 0
            or default is None
            or default is argparse.SUPPRESS
            or default in ([], ())
        ):
            return text
        return super()._get_help_string(action) or ""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tickcast",
        description="tick-level market direction service",
        epilog="`tickcast COMMAND --help` shows a command's flags.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    return p


def command_module(name: str) -> ModuleType:
    return importlib.import_module(f"app.cli.{COMMANDS[name][0]}")


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    # the first word picks the command (or is --help); the rest goes to that command's own parser
    args = build_parser().parse_args(argv[:1])
    rc: int = command_module(args.command).main(argv[1:], prog=f"tickcast {args.command}")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
