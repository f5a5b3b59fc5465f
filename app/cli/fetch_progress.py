"""What the backfill command shows while it runs and when it ends: the progress bar and the figures."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime

from tqdm import tqdm  # type: ignore[import-untyped]  # tqdm ships no type information

from app.services.ingestion.pull import PullProgress


def iso(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Stats(PullProgress):
    """The pull loop's figures, and why the command stopped, in the summary's words."""

    reason: str = "the source has nothing more"


class Bar:
    """Pages, new ticks and the last tick's time; with --end, progress in time from start to end."""

    def __init__(self, enabled: bool, start: float | None, end: float | None) -> None:
        self.start, self.end = start, end
        self.bar: tqdm | None = None
        if enabled:
            if end is not None:
                self.bar = tqdm(
                    total=None, unit="s", unit_scale=True, dynamic_ncols=True, file=sys.stderr, desc="time"
                )
            else:
                self.bar = tqdm(unit="page", dynamic_ncols=True, file=sys.stderr, desc="pages")

    def __call__(self, pages: int, new: int, last_time: float | None) -> None:
        b = self.bar
        if b is None:
            return
        if self.end is None:
            b.update(pages - b.n)
        elif last_time is not None:
            if self.start is None:
                self.start = last_time
            if b.total is None:
                b.total = max(0.0, self.end - self.start)
            b.update(max(0.0, min(b.total, last_time - self.start)) - b.n)
        b.set_postfix({"pages": pages, "new": new, "last": iso(last_time)}, refresh=False)
        b.refresh()

    def page(self, progress: PullProgress) -> None:
        """The pull loop's per-page call."""
        self(progress.pages, progress.new, progress.last_time)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
