"""Resolve a data source named on a command line to ticks.

One spelling for every CLI: a CSV path, `synthetic[:N]`, or a market in the
store as `exchange:SYMBOL` (e.g. `bitstamp:BTC-USD`), the store being a SQLite file or a
postgresql:// URL (`app.database`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.database import is_postgres, redact
from app.market.backends import open_tick_store
from app.market.store import DEFAULT_PATH
from app.market.ticks import TickArrays, TickError, read_csv
from app.paths import tried

DEFAULT_SYNTHETIC_TICKS = 100_000


@dataclass(frozen=True)
class Loaded:
    ticks: TickArrays
    info: dict[str, Any]  # what goes into a checkpoint's `data` metadata


def load_ticks(
    source: str,
    *,
    store_path: str | Path = DEFAULT_PATH,
    start: float | None = None,
    end: float | None = None,
    seed: int = 0,
    ids: bool = False,
) -> Loaded:
    """Read ticks from `source`; errors say which spellings exist. `ids`: a stored market's
    trade ids too (a CSV's come with it), for whoever cuts series where ids are missing."""
    if source == "synthetic" or source.startswith("synthetic:"):
        from app.market.sources import synthetic

        n = DEFAULT_SYNTHETIC_TICKS
        if ":" in source:
            try:
                n = int(source.split(":", 1)[1])
            except ValueError as e:
                raise ValueError(f"synthetic:N needs an integer tick count, got {source!r}") from e
        ticks = synthetic.generate(n, seed=seed)
        return Loaded(
            ticks, {"source": "synthetic", "exchange": "synthetic", "symbol": "BTC-USD", "seed": seed}
        )
    path = Path(source)
    if path.suffix.lower() == ".csv" or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"no such CSV file: {tried(path)}")
        try:
            ticks = read_csv(path)
        except TickError as e:
            raise TickError(f"{source}: {e}") from e
        if start is not None or end is not None:
            lo = ticks.time.searchsorted(start, "left") if start is not None else 0
            hi = ticks.time.searchsorted(end, "left") if end is not None else len(ticks)
            ticks = ticks[lo:hi]
        return Loaded(ticks, {"source": str(path), "exchange": None, "symbol": None})
    if ":" in source:
        exchange, symbol = source.split(":", 1)
        # a URL's password must not reach a message or a checkpoint's metadata
        where = redact(str(store_path)) if is_postgres(store_path) else store_path
        if not is_postgres(store_path) and not Path(store_path).is_file():
            raise FileNotFoundError(
                f"no tick store at {tried(store_path)}; fetch ticks first (tickcast fetch) or pass --store"
            )
        store = open_tick_store(store_path)
        try:
            ticks = store.read(exchange, symbol, start=start, end=end, ids=ids)
        finally:
            store.close()
        if len(ticks) == 0:
            raise ValueError(f"the store {where} has no ticks for {exchange}:{symbol} in that range")
        return Loaded(ticks, {"source": f"store:{where}", "exchange": exchange, "symbol": symbol})
    raise ValueError(
        f"unknown data source {source!r}: give a CSV path, 'synthetic[:N]', "
        "or a stored market as exchange:SYMBOL"
    )
