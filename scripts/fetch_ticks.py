#!/usr/bin/env python
"""Backfill one market's trades: the same command as `tickcast fetch` (code in app/cli/fetch.py).

python scripts/fetch_ticks.py bitstamp BTC-USD --start 2024-01-01 --end 2024-01-02
python scripts/fetch_ticks.py --help
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.cli import fetch as _fetch
from app.cli.fetch import (  # noqa: F401  (re-exported: tests and old imports use them)
    CSV_COLUMNS,
    Bar,
    CsvSink,
    Stats,
    StoreSink,
    backfill,
    build_parser,
    iso,
    make,
    parse_option,
    parse_time,
)


def main(argv: list[str] | None = None) -> int:
    """app.cli.fetch.main, running this module's `backfill` (so it can be replaced here, in tests)."""
    return _fetch.main(argv, run=backfill)


if __name__ == "__main__":
    raise SystemExit(main())
