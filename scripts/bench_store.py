"""Benchmark the tick store: bulk insert, full read into arrays, idempotent re-insert.

With --url, PostgreSQL beside SQLite on the same ticks in one run: each store gets a fresh
database (PostgreSQL: one this script creates on that server and drops afterwards), and the
figures are printed side by side with their ratios against the targets: PostgreSQL inserts at
least as fast as SQLite, and reads a market whole (as training does, with ids and without)
within 1.5x of SQLite's time.

Usage: .venv/bin/python scripts/bench_store.py [--n 1000000] [--no-ids] [--csv FILE] [--json]
       .venv/bin/python scripts/bench_store.py --url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from app.database import redact
from app.market.backends import open_tick_store
from app.market.storage import TickStorage
from app.market.store import TickStore
from app.market.ticks import TickArrays, read_csv

# (figure, PostgreSQL's time over SQLite's at most): the targets of issue 15
TARGETS = {"insert_s": 1.0, "read_s": 1.5, "read_bare_s": 1.5}
LABELS = {
    "insert_s": "insert",
    "read_s": "read (ids)",
    "read_bare_s": "read (ids=False)",
    "reinsert_s": "reinsert (dups)",
    "gaps_s": "gaps (coverage)",
}


def synthetic(n: int, *, ids: bool, seed: int = 0) -> TickArrays:
    """A random walk on a tick grid with bursty arrivals: many trades share a second,
    as on real exchanges, so the no-id dedup path sees realistic ties."""
    rng = np.random.default_rng(seed)
    t = 1_700_000_000 + np.cumsum(rng.exponential(0.5, n)).round()  # whole seconds, many ties
    steps = rng.choice([-1, 0, 0, 0, 1], n)
    price = np.round(30_000 + np.cumsum(steps) * 0.5, 2)
    price = np.maximum(price, 1.0)
    amount = np.round(rng.lognormal(-3, 1.2, n), 8)
    trade_id = side = None
    if ids:
        trade_id = np.arange(10_000_000, 10_000_000 + n).astype(str).astype(object)
        side = np.where(rng.random(n) < 0.5, "buy", "sell").astype(object)
    return TickArrays(t, price, amount, trade_id, side)


def from_csv(path: Path, n: int, *, ids: bool) -> TickArrays:
    """A real month of trades (e.g. ../shared/data/bitstamp_btcusd_2018-08.csv) repeated, each copy
    shifted past the one before, to n ticks; numbered one by one as an exchange would."""
    month = read_csv(path)
    span = float(month.time[-1] - month.time[0]) + 1.0
    copies = -(-n // len(month))
    shift = np.repeat(np.arange(copies) * span, len(month))[:n]
    trade_id = np.arange(10_000_000, 10_000_000 + n).astype(str).astype(object) if ids else None
    return TickArrays(
        np.tile(month.time, copies)[:n] + shift,
        np.tile(month.price, copies)[:n],
        np.tile(month.amount, copies)[:n],
        trade_id,
    )


@dataclass
class Figures:
    insert_s: float
    read_s: float
    read_bare_s: float
    reinsert_s: float
    gaps_s: float | None = None  # measured beside PostgreSQL only


def timed(f: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def check(store: TickStorage, market: str, ticks: TickArrays) -> None:
    """The market reads back exactly as it was stored."""
    got = store.read("bench", market)
    assert len(got) == len(ticks) and np.array_equal(got.time, ticks.time)
    assert np.array_equal(got.price, ticks.price) and np.array_equal(got.amount, ticks.amount)
    if ticks.trade_id is not None:
        assert got.trade_id is not None and got.trade_id.tolist() == ticks.trade_id.tolist()


def measure(store: TickStorage, ticks: TickArrays) -> Figures:
    """One store alone: insert, read back whole (checked), re-insert, printing each figure."""
    n = len(ticks)
    insert_s = timed(lambda: store.insert("bench", "BTC-USD", ticks))
    assert store.count("bench", "BTC-USD") == n, "not every tick was stored"
    print(f"insert   {n:,} ticks in {insert_s:.2f} s = {n / insert_s:,.0f} ticks/s")
    check(store, "BTC-USD", ticks)
    read_s = min(timed(lambda: store.read("bench", "BTC-USD")) for _ in range(3))
    print(f"read     {n:,} ticks into arrays: best of 3 {read_s:.3f} s")
    bare_s = min(timed(lambda: store.read("bench", "BTC-USD", ids=False)) for _ in range(3))
    print(f"read     same, ids=False (time/price/amount only): best of 3 {bare_s:.3f} s")
    added: list[int] = []
    reinsert_s = timed(lambda: added.append(store.insert("bench", "BTC-USD", ticks)))
    assert added == [0], f"re-insert stored {added} ticks twice"
    print(f"reinsert {n:,} ticks (all duplicates) in {reinsert_s:.2f} s")
    return Figures(insert_s, read_s, bare_s, reinsert_s)


def insert(store: TickStorage, market: str, ticks: TickArrays) -> int:
    return store.insert("bench", market, ticks)


def side_by_side(stores: dict[str, TickStorage], ticks: TickArrays, rounds: int) -> dict[str, Figures]:
    """Every figure of each store, taken in turns (one store's insert, then the other's, ...) and
    the best of the turns kept, so that a busy machine slows both alike."""
    n, best = len(ticks), {name: dict[str, float]() for name in stores}

    def turn(figure: str, f: Callable[[TickStorage], object]) -> None:
        for name, store in stores.items():
            t0 = time.perf_counter()
            f(store)
            t = time.perf_counter() - t0
            best[name][figure] = min(t, best[name].get(figure, t))

    for r in range(rounds):  # a fresh market each round: every tick new
        turn("insert_s", partial(insert, market=f"R{r}", ticks=ticks))
    for name, store in stores.items():
        assert store.count("bench", "R0") == n, f"{name} did not store every tick"
        check(store, "R0", ticks)
    for _ in range(rounds + 2):
        turn("read_s", lambda s: s.read("bench", "R0"))
        turn("read_bare_s", lambda s: s.read("bench", "R0", ids=False))
    turn("reinsert_s", lambda s: s.insert("bench", "R0", ticks))
    turn("gaps_s", lambda s: s.gaps("bench", "R0", 300.0))
    figures = {name: Figures(**b) for name, b in best.items()}
    for name, f in figures.items():
        print(
            f"{name:<11}insert {n:,} ticks {f.insert_s:.2f} s ({n / f.insert_s:,.0f}/s, best of {rounds}); "
            f"read {f.read_s:.3f} s, ids=False {f.read_bare_s:.3f} s (best of {rounds + 2}); "
            f"reinsert {f.reinsert_s:.2f} s; gaps {f.gaps_s or 0:.2f} s"
        )
    return figures


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new database on the server `admin_url` reaches, dropped (connections and all) afterwards."""
    import psycopg

    name = f"tickcast_bench_{os.getpid()}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    p = urlsplit(admin_url)
    try:
        yield urlunsplit((p.scheme, p.netloc, f"/{name}", p.query, p.fragment))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def compare(lite: Figures, pg: Figures) -> dict[str, float]:
    """Print both stores' figures side by side with PostgreSQL's over SQLite's; returns the ratios."""
    ratios = {k: float(getattr(pg, k)) / float(getattr(lite, k)) for k in LABELS}
    print(f"\n{'':<18}{'sqlite':>10}{'postgresql':>12}{'pg/sqlite':>11}   target")
    for k, label in LABELS.items():
        target = TARGETS.get(k)
        verdict = "" if target is None else f"<= {target:.2f}  {'ok' if ratios[k] <= target else 'MISSED'}"
        print(f"{label:<18}{getattr(lite, k):>9.3f}s{getattr(pg, k):>11.3f}s{ratios[k]:>11.2f}   {verdict}")
    return ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="ticks to insert")
    ap.add_argument("--no-ids", action="store_true", help="ticks without trade_id/side")
    ap.add_argument("--csv", type=Path, help="a real trades CSV repeated to --n ticks, not synthetic ones")
    ap.add_argument("--url", help="PostgreSQL too: an admin URL of a server to make a scratch database on")
    ap.add_argument("--rounds", type=int, default=3, help="with --url: inserts per store (reads: 2 more)")
    ap.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    args = ap.parse_args()

    ids = not args.no_ids
    ticks = synthetic(args.n, ids=ids) if args.csv is None else from_csv(args.csv, args.n, ids=ids)
    if args.url:
        summary = against_postgres(ticks, args.url, args.rounds)
    else:
        with tempfile.TemporaryDirectory() as tmp, TickStore(Path(tmp) / "bench.db") as store:
            lite = measure(store, ticks)
            db_mb = sum(f.stat().st_size for f in Path(tmp).iterdir()) / 2**20
            print(f"files    {db_mb:.0f} MiB")
        summary = {
            "insert_ticks_per_s": round(args.n / lite.insert_s),
            "read_1m_s": round(lite.read_s * 1_000_000 / args.n, 4),
            "reinsert_s": round(lite.reinsert_s, 3),
        }
    if args.json:
        print(json.dumps(summary))


def against_postgres(ticks: TickArrays, admin_url: str, rounds: int) -> dict[str, object]:
    print(f"sqlite in a temporary folder beside postgresql on {redact(admin_url)}, {len(ticks):,} ticks")
    with tempfile.TemporaryDirectory() as tmp, fresh_database(admin_url) as url:
        lite, pg = TickStore(Path(tmp) / "bench.db"), open_tick_store(url)
        try:
            figures = side_by_side({"sqlite": lite, "postgresql": pg}, ticks, rounds)
        finally:
            lite.close()
            pg.close()
    ratios = compare(figures["sqlite"], figures["postgresql"])
    return {
        "n": len(ticks),
        **{name: asdict(f) for name, f in figures.items()},
        "pg_over_sqlite": {k: round(v, 3) for k, v in ratios.items()},
        "targets_met": all(ratios[k] <= t for k, t in TARGETS.items()),
    }


if __name__ == "__main__":
    main()
