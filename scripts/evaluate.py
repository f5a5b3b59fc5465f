#!/usr/bin/env python
"""Score saved models beside the baselines: the same command as `tickcast evaluate`.

Code: app/cli/evaluate.py.

    python scripts/evaluate.py models/cnn-....pt ../shared/data/bitstamp_btcusd_2018-08.csv
    python scripts/evaluate.py --help
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.cli.evaluate import build_parser, main  # noqa: F401  (re-exported)

if __name__ == "__main__":
    raise SystemExit(main())
