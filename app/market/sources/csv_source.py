"""A CSV file as a trade source: the same pull loop ingests files as exchanges.

Backfills from an export, the ancestor's data files and offline tests all go through
the ingestion path that exchanges use (cursor, pages, store), instead of a side door.
The file is read with `app.market.ticks.read_csv` (validated, rows named by line),
and re-read when it changes on disk, so a file that grows is followed like a feed.

Rows carry no trade ids, so each is keyed by its place in the file: its ordinal among
the file's identical (time, price, amount) rows, numbered over the whole file once.
A page is a slice of that, so what is stored does not depend on the page size, on
where a pull stopped, or on a restart; appending rows never renumbers earlier ones.
"""

from __future__ import annotations

import asyncio
import math
import os
from pathlib import Path

import numpy as np

from app.market.sources.base import MalformedResponse, Page, SourceError, canonical_symbol
from app.market.ticks import TickArrays, TickError, read_csv


class CsvSource:
    """Ticks of one market from a CSV file; the cursor is the index of the next row."""

    name = "csv"
    page_size = 10_000

    def __init__(self, path: str | os.PathLike[str], *, page_size: int | None = None) -> None:
        self.path = Path(path)
        if page_size is not None:
            if page_size < 1:
                raise ValueError("page_size must be >= 1")
            self.page_size = page_size
        self._ticks: TickArrays | None = None
        self._stamp: tuple[int, int] | None = None  # (mtime_ns, size) of the file read

    def pair(self, symbol: str) -> str:
        """The file holds one market whatever it is called; normalise for messages and keys."""
        return canonical_symbol(symbol)

    async def fetch(self, symbol: str, cursor: str | None, *, start: float | None = None) -> Page:
        """Rows [cursor, cursor + page_size); with no cursor, from the first row at or after `start`."""
        self.pair(symbol)
        ticks = await asyncio.to_thread(self._load)
        n = len(ticks)
        if cursor is not None:
            if not cursor.isdigit():
                raise SourceError(f"csv: cursor {cursor!r} is not a row index; reset the market's cursor")
            i = int(cursor)
        elif start is not None:
            if not math.isfinite(start):
                raise ValueError("start must be a finite unix time")
            i = int(np.searchsorted(ticks.time, start, side="left"))
        else:
            i = 0
        i = min(i, n)
        j = min(i + self.page_size, n)
        return Page(ticks[i:j], str(j), j < n)

    def _load(self) -> TickArrays:
        """The file's ticks, numbered as a whole (`with_ordinals`), re-read only when its
        mtime or size changed."""
        try:
            st = self.path.stat()
        except OSError as e:
            raise SourceError(f"csv: cannot read {self.path}: {e.strerror}; check the path") from e
        stamp = (st.st_mtime_ns, st.st_size)
        if self._ticks is None or stamp != self._stamp:
            try:
                ticks = read_csv(self.path).with_ordinals()
            except TickError as e:
                raise MalformedResponse(f"csv: {self.path}: {e}; fix the file, nothing was read") from e
            except OSError as e:
                raise SourceError(f"csv: cannot read {self.path}: {e.strerror}; check the path") from e
            self._ticks, self._stamp = ticks, stamp
        return self._ticks

    async def aclose(self) -> None:
        """Nothing to close: the file is read whole and not held open."""
        self._ticks = None
