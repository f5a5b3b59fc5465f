"""The tick store's seam: what services and the API ask of wherever ticks are kept.

`TickStore` (SQLite, one file) is the embedded default; a PostgreSQL store for
several replicas sharing data is next. Code that only stores and reads ticks is
written against `TickStorage`, so a second backend is a new class that
satisfies this protocol, and nothing that uses it changes. Only composition
roots (`app.main`, `app.cli`) and worker processes that open a store pick a
class.

What a backend promises beyond the signatures:
- `insert` is idempotent (a trade seen twice is stored once) and atomic with
  its `cursor`: both commit or neither does; bad ticks raise before anything
  is written.
- reads return ticks in time order, ties in arrival order (`Position`).
- a store that cannot read or write right now (locked, read-only, a failing
  disk, a lost connection) raises one of `errors`; callers answer those with
  "retry later" and never take them for a bug. A store that can never be used
  as it is (a schema newer than this tickcast) raises `StoreError` on opening.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from app.market.coverage import DEFAULT_LIMIT, Coverage
from app.market.ticks import TickArrays

Position = tuple[float, int]  # (time, seq): where a tick sits in its market's order


class StoreError(RuntimeError):
    """The store cannot be used as it is (e.g. a file written by a newer tickcast)."""


class TickStorage(Protocol):
    """Idempotent tick storage keyed by market (`exchange`, `symbol`); safe to share between
    threads (an asyncio app calls it from a thread pool)."""

    @property
    def path(self) -> str:
        """Where the store lives, as a worker process opens it again: a file, ':memory:', or
        (other backends) a URL."""
        ...

    @property
    def schema_version(self) -> int:
        """The store's schema version; reading it proves the store answers (/ready)."""
        ...

    @property
    def errors(self) -> tuple[type[Exception], ...]:
        """The exceptions by which this backend says it cannot read or write right now."""
        ...

    def insert(self, exchange: str, symbol: str, ticks: TickArrays, *, cursor: str | None = None) -> int:
        """Store ticks, skipping ones already stored (and `cursor` with them); how many were new."""
        ...

    def cursor(self, exchange: str, symbol: str) -> str | None:
        """Where ingestion of this market resumes (None: never pulled)."""
        ...

    def read(
        self,
        exchange: str,
        symbol: str,
        start: float | None = None,
        end: float | None = None,
        limit: int | None = None,
        *,
        ids: bool = True,
    ) -> TickArrays:
        """Ticks with start <= time < end in time order, the first `limit`; `ids=False` may skip
        trade_id and side."""
        ...

    def latest(self, exchange: str, symbol: str, n: int, *, ids: bool = True) -> TickArrays:
        """The last n ticks, oldest first."""
        ...

    def after(
        self, exchange: str, symbol: str, position: Position | None, limit: int, *, oldest: bool = False
    ) -> tuple[TickArrays, np.ndarray]:
        """The newest `limit` ticks past `position` (any, if None), oldest first, with their seqs;
        `oldest`: the first `limit` past it."""
        ...

    def before(self, exchange: str, symbol: str, position: Position, n: int) -> tuple[TickArrays, np.ndarray]:
        """The last n ticks at or before `position`, oldest first, with their seqs."""
        ...

    def count(
        self,
        exchange: str,
        symbol: str,
        start: float | None = None,
        end: float | None = None,
        limit: int | None = None,
    ) -> int:
        """Ticks with start <= time < end; with `limit`, counting may stop there."""
        ...

    def time_range(self, exchange: str, symbol: str) -> tuple[float, float] | None:
        """(first, last) tick time, or None for a market with no ticks."""
        ...

    def gaps(self, exchange: str, symbol: str, gap_s: float, limit: int = DEFAULT_LIMIT) -> Coverage:
        """The market's coverage (`app.market.coverage`): time gaps over `gap_s` and, where its
        trade ids are consecutive, skipped ids; all counted, the first `limit` of each listed."""
        ...

    def markets(self) -> list[tuple[str, str]]:
        """Every stored market as (exchange, symbol), sorted."""
        ...

    def close(self) -> None: ...
