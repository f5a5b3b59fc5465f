"""Where the pull loop writes: the tick store, or (for the backfill command) a CSV file.

Both keep a page's ticks and the cursor after them together, so a pull resumes
exactly where the kept data ends and never keeps a tick twice.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.atomic import atomic_write
from app.database import is_postgres, redact
from app.market.backends import open_tick_store
from app.market.storage import TickStorage
from app.market.store import TickStore
from app.market.ticks import TickArrays

CSV_COLUMNS = ["time", "price", "amount", "trade_id", "side"]


class StoreSink:
    """The tick store: its per-market cursor, idempotent inserts (ticks + cursor in one commit)."""

    def __init__(self, store: TickStorage, exchange: str, symbol: str, *, owned: bool = False) -> None:
        self.store = store
        self.exchange, self.symbol = exchange, symbol
        self._owned = owned  # close() closes the store only when this sink opened it

    @classmethod
    def open(cls, target: Path | str, exchange: str, symbol: str) -> StoreSink:
        """A sink on the store at `target` (a SQLite file or a postgresql:// URL), which `close()`
        closes."""
        if is_postgres(target):
            return cls(open_tick_store(target), exchange, symbol, owned=True)
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        return cls(TickStore(target), exchange, symbol, owned=True)

    @property
    def label(self) -> str:
        return redact(str(self.store.path))

    @property
    def resume_point(self) -> str:
        return f"the store {redact(str(self.store.path))} (its cursor for {self.exchange}:{self.symbol})"

    def cursor(self) -> str | None:
        return self.store.cursor(self.exchange, self.symbol)

    async def write(self, ticks: TickArrays, cursor: str | None) -> int:
        # off the event loop: SQLite work of a big page would stall every other request
        return await asyncio.to_thread(self.store.insert, self.exchange, self.symbol, ticks, cursor=cursor)

    def close(self) -> None:
        if self._owned:
            self.store.close()


@dataclass
class CsvState:
    """`<csv>.cursor`: the market, the cursor, how much of the CSV is committed, and the ticks
    at its last time (to tell a resent tick from a new one at the same time)."""

    exchange: str | None
    symbol: str | None
    cursor: str | None = None
    bytes: int = 0
    rows: int = 0
    last_time: float | None = None
    last_keys: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, side: Path, path: Path) -> CsvState:
        try:
            raw: dict[str, Any] = json.loads(side.read_text())
            size = int(raw["bytes"])
            last = raw["last_time"]
            return cls(
                exchange=raw.get("exchange"),
                symbol=raw.get("symbol"),
                cursor=raw["cursor"],
                bytes=size,
                rows=int(raw["rows"]),
                last_time=None if last is None else float(last),
                last_keys=[str(k) for k in raw["last_keys"]],
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"cannot read {side} ({e}); delete it and {path} to start over") from e


class CsvSink:
    """An append-only CSV plus `<csv>.cursor` (JSON) saying how much of it is committed.

    Per page: append the rows and fsync, then replace the cursor file atomically with
    the new cursor and the CSV's committed size. A re-run first cuts the CSV back to
    that size, so a page written but not committed (a crash in between) is fetched
    again instead of duplicated. Rows are kept in time order: a tick older than the
    last written one is dropped, and ticks at the last written time are matched
    against the ones already written there (overlapping pages, a page cut at --end):
    by trade id, else by (price, amount, ordinal) where the source numbers its id-less
    rows, so a page that continues a second is not taken for a resend of it.
    """

    def __init__(self, path: Path, exchange: str, symbol: str) -> None:
        self.path = path
        self.side = path.with_name(path.name + ".cursor")
        self.label = str(path)
        self.resume_point = str(self.side)
        self.exchange, self.symbol = exchange, symbol
        self.state = self._resume() if self.side.exists() else self._create()

    def _resume(self) -> CsvState:
        path, side = self.path, self.side
        state = CsvState.load(side, path)
        if (state.exchange, state.symbol) != (self.exchange, self.symbol):
            raise ValueError(
                f"{path} holds {state.exchange}:{state.symbol}, not {self.exchange}:{self.symbol}; "
                "choose another --csv file"
            )
        if not path.exists() or path.stat().st_size < state.bytes:
            raise ValueError(
                f"{path} is missing or shorter than {side} says ({state.bytes} bytes); "
                f"delete {side} (and {path}) to start over"
            )
        if path.stat().st_size > state.bytes:  # an uncommitted page from a run that was cut off
            with open(path, "r+b") as f:
                f.truncate(state.bytes)
                os.fsync(f.fileno())
        return state

    def _create(self) -> CsvState:
        path = self.path
        if path.exists() and path.stat().st_size > 0:
            raise ValueError(
                f"{path} exists but has no {self.side.name} to resume from; "
                "choose a new --csv file or delete this one"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerow(CSV_COLUMNS)
            f.flush()
            os.fsync(f.fileno())
        state = CsvState(self.exchange, self.symbol, bytes=path.stat().st_size)
        self._save(state)
        return state

    def cursor(self) -> str | None:
        return self.state.cursor

    def _save(self, state: CsvState) -> None:
        with atomic_write(self.side, "w", encoding="utf-8") as f:
            json.dump(asdict(state), f)

    @staticmethod
    def _key(ticks: TickArrays, i: int) -> str:
        tid = None if ticks.trade_id is None else ticks.trade_id[i]
        if tid is not None:
            return f"id:{tid}"
        key = f"v:{float(ticks.price[i])!r}:{float(ticks.amount[i])!r}"
        return key if ticks.ordinal is None else f"{key}:{int(ticks.ordinal[i])}"

    def _new_rows(self, ticks: TickArrays) -> list[int]:
        """The rows of `ticks` not written yet: none before the last written time, and at that
        time only those not matched by a key already written there."""
        last = self.state.last_time
        seen = Counter(self.state.last_keys)
        keep: list[int] = []
        for i in range(len(ticks)):
            t = float(ticks.time[i])
            if last is not None and t < last:
                continue
            if last is not None and t == last:
                k = self._key(ticks, i)
                if seen[k] <= 0 and ticks.ordinal is not None and k.startswith("v:"):
                    k = k.rsplit(":", 1)[0]  # a key written by a version without ordinals
                if seen[k] > 0:
                    seen[k] -= 1
                    continue
            keep.append(i)
        return keep

    def _append(self, ticks: TickArrays, idx: np.ndarray) -> None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        cols = [ticks.time[idx].tolist(), ticks.price[idx].tolist(), ticks.amount[idx].tolist()]
        for col in (ticks.trade_id, ticks.side):
            cols.append([""] * len(idx) if col is None else ["" if v is None else str(v) for v in col[idx]])
        w.writerows(zip(*cols, strict=True))
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())

    async def write(self, ticks: TickArrays, cursor: str | None) -> int:
        state = self.state
        idx = np.asarray(self._new_rows(ticks), dtype=np.int64)
        if len(idx):
            self._append(ticks, idx)
            new_last = float(ticks.time[idx[-1]])
            at_last = [self._key(ticks, int(i)) for i in idx if float(ticks.time[i]) == new_last]
            if new_last == state.last_time:
                at_last = list(state.last_keys) + at_last
            state.last_time = new_last
            state.last_keys = at_last
            state.rows += len(idx)
        if cursor is not None:
            state.cursor = cursor
        state.bytes = self.path.stat().st_size
        if len(idx) or cursor is not None:
            self._save(state)
        return len(idx)

    def close(self) -> None:
        pass
