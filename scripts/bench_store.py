"""Benchmark TickStore: bulk insert, full read into arrays, idempotent re-insert.

Usage: .venv/bin/python scripts/bench_store.py [--n 1000000] [--no-ids] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from app.market.store import TickStore
from app.market.ticks import TickArrays


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="ticks to insert")
    ap.add_argument("--no-ids", action="store_true", help="ticks without trade_id/side")
    ap.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    args = ap.parse_args()

    ticks = synthetic(args.n, ids=not args.no_ids)
    with tempfile.TemporaryDirectory() as tmp, TickStore(Path(tmp) / "bench.db") as store:
        t0 = time.perf_counter()
        added = store.insert("bench", "BTC-USD", ticks)
        insert_s = time.perf_counter() - t0
        assert added == args.n, f"stored {added} of {args.n}"
        print(f"insert   {args.n:,} ticks in {insert_s:.2f} s = {args.n / insert_s:,.0f} ticks/s")

        reads = []
        for _ in range(3):
            t0 = time.perf_counter()
            got = store.read("bench", "BTC-USD")
            reads.append(time.perf_counter() - t0)
        assert len(got) == args.n and np.array_equal(got.time, ticks.time)
        assert np.array_equal(got.price, ticks.price)
        print(f"read     {len(got):,} ticks into arrays: best of 3 {min(reads):.3f} s")
        bare = []
        for _ in range(3):
            t0 = time.perf_counter()
            store.read("bench", "BTC-USD", ids=False)
            bare.append(time.perf_counter() - t0)
        print(f"read     same, ids=False (time/price/amount only): best of 3 {min(bare):.3f} s")

        t0 = time.perf_counter()
        again = store.insert("bench", "BTC-USD", ticks)
        reinsert_s = time.perf_counter() - t0
        assert again == 0, f"re-insert stored {again} ticks twice"
        print(f"reinsert {args.n:,} ticks (all duplicates) in {reinsert_s:.2f} s")
        db_mb = sum(f.stat().st_size for f in Path(tmp).iterdir()) / 2**20
        print(f"files    {db_mb:.0f} MiB")

    if args.json:
        print(
            json.dumps(
                {
                    "insert_ticks_per_s": round(args.n / insert_s),
                    "read_1m_s": round(min(reads) * 1_000_000 / args.n, 4),
                    "reinsert_s": round(reinsert_s, 3),
                }
            )
        )


if __name__ == "__main__":
    main()
