"""The synthetic market as a live source: new ticks only, deterministic, cursor counts."""

from __future__ import annotations

import asyncio

import numpy as np

from app.market.sources.base import Page, Source
from app.market.sources.live_synthetic import SyntheticSource
from app.market.ticks import TickArrays

NOW = 1_750_000_000.0


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def fetch(src: SyntheticSource, cursor: str | None, start: float | None = None) -> Page:
    return asyncio.run(src.fetch("BTC-USD", cursor, start=start))


def test_successive_fetches_return_new_ticks_only() -> None:
    clock = Clock()
    src = SyntheticSource(seed=1, history_s=1800.0, clock=clock)
    assert isinstance(src, Source)
    a = fetch(src, None)
    assert len(a.ticks) > 50 and a.cursor == str(len(a.ticks)) and not a.more
    assert a.ticks.time[0] >= NOW - 1800 and a.ticks.time[-1] <= NOW
    assert fetch(src, a.cursor).ticks.time.size == 0  # no time passed, nothing new
    clock.t += 600
    b = fetch(src, a.cursor)
    assert len(b.ticks) > 0 and b.cursor == str(len(a.ticks) + len(b.ticks))
    assert b.ticks.time[0] >= a.ticks.time[-1] and b.ticks.time[-1] <= clock.t
    assert b.ticks.trade_id[0] == a.cursor  # ids are ordinals: no overlap


def test_deterministic_by_seed_however_sliced() -> None:
    c1, c2 = Clock(), Clock()
    one, many = SyntheticSource(7, 600.0, clock=c1), SyntheticSource(7, 600.0, clock=c2)
    c1.t += 3000
    whole = fetch(one, None).ticks
    parts, cursor = [], None
    for _ in range(10):
        c2.t += 300
        p = fetch(many, cursor)
        parts.append(p.ticks)
        cursor = p.cursor
    got = TickArrays.concat(parts)
    np.testing.assert_array_equal(got.time, whole.time)
    np.testing.assert_array_equal(got.price, whole.price)
    assert list(got.trade_id) == list(whole.trade_id) and cursor == str(len(whole))
    other = fetch(SyntheticSource(8, 600.0, clock=Clock(NOW + 3000)), None).ticks
    assert not np.array_equal(other.price[:50], whole.price[:50])


def test_restart_resumes_after_cursor() -> None:
    """A new instance given a stored cursor skips that many ticks, so ids never collide."""
    first = fetch(SyntheticSource(3, 3600.0, clock=Clock()), None)
    n = len(first.ticks)
    again = SyntheticSource(3, 3600.0, clock=Clock())
    p = fetch(again, first.cursor)
    assert len(p.ticks) == 0 and p.cursor == first.cursor
    big = str(n + 40)  # more than exists yet: keep skipping as the clock moves
    p = fetch(SyntheticSource(3, 3600.0, clock=Clock()), big)
    assert len(p.ticks) == 0 and p.cursor == big


def test_start_drops_older_ticks() -> None:
    all_ = fetch(SyntheticSource(4, 3600.0, clock=Clock()), None).ticks
    start = float(all_.time[100])
    p = fetch(SyntheticSource(4, 3600.0, clock=Clock()), None, start=start)
    i = int(np.searchsorted(all_.time, start))
    np.testing.assert_array_equal(p.ticks.time, all_.time[i:])
    assert p.cursor == str(len(all_)) and p.ticks.trade_id[0] == str(i)
