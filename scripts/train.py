#!/usr/bin/env python
"""Train a next-tick rise classifier: the same command as `tickcast train` (code in app/cli/train.py).

python scripts/train.py CNN ticks.csv
python scripts/train.py --help
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.cli.train import (  # noqa: F401  (re-exported: tests and old imports use them)
    Bar,
    build_parser,
    config_from,
    evaluate_only,
    main,
    parse_split,
    summary,
)

if __name__ == "__main__":
    raise SystemExit(main())
