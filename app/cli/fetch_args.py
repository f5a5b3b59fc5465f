"""The backfill command's arguments: times, source options and the parser itself.

The command's help text is `app.cli.fetch`'s docstring, passed in as the description.
"""

from __future__ import annotations

import argparse
import math
from datetime import UTC, datetime
from typing import Any

from app.cli import HelpFormatter
from app.market.sources import SOURCES
from app.market.store import DEFAULT_PATH


def parse_time(text: str) -> float:
    """Unix seconds ('1700000000', '1700000000.5') or an ISO date/time (naive means UTC)."""
    s = text.strip()
    try:
        v = float(s)
    except ValueError:
        pass
    else:
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"not a finite time: {text!r}")
        return v
    try:
        dt = datetime.fromisoformat(s[:-1] + "+00:00" if s.endswith(("Z", "z")) else s)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"cannot read time {text!r}; give unix seconds or an ISO date such as 2024-01-31 "
            "or 2024-01-31T12:00:00Z"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def parse_option(text: str) -> tuple[str, Any]:
    """--set KEY=VALUE: a keyword for the source's constructor (ints, floats, true/false)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE (e.g. limit=500), got {text!r}")
    value: Any = raw
    low = raw.strip().lower()
    if low in ("true", "false"):
        value = low == "true"
    else:
        for conv in (int, float):
            try:
                value = conv(raw)
                break
            except ValueError:
                continue
    return key.strip(), value


def build_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    p.add_argument("exchange", help=f"the source: {', '.join(sorted(SOURCES))}")
    p.add_argument("symbol", help="the market as BASE-QUOTE, e.g. BTC-USD")
    p.add_argument(
        "--start",
        type=parse_time,
        default=None,
        help="first tick time (unix s or ISO date); used when nothing was fetched yet "
        "(default: where the source begins; for most exchanges, their latest trades)",
    )
    p.add_argument(
        "--end",
        type=parse_time,
        default=None,
        help="stop before this tick time (unix s or ISO date); ticks at/after it are not kept "
        "(default: until the source has nothing more)",
    )
    dest = p.add_mutually_exclusive_group()
    dest.add_argument(
        "--store",
        default=None,
        help=f"tick store to fill: a SQLite file, relative to the current directory (default: "
        f"{DEFAULT_PATH}), or a postgresql:// URL",
    )
    dest.add_argument(
        "--csv",
        default=None,
        help="append to this CSV instead of the store (its resume point lives in <csv>.cursor)",
    )
    p.add_argument(
        "--base-url",
        default=None,
        help="the exchange's API base URL, for mirrors and tests (default: the exchange's own)",
    )
    p.add_argument("--file", default=None, help="for the csv source: the CSV file to read")
    p.add_argument(
        "--set",
        dest="options",
        action="append",
        type=parse_option,
        default=[],
        metavar="KEY=VALUE",
        help="a source option, e.g. limit=500, timeout=30, retries=8, seed=1 (repeatable)",
    )
    p.add_argument(
        "--max-pages",
        type=int,
        default=None,
        help="stop after this many pages, a re-run continues (default: no limit)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p
