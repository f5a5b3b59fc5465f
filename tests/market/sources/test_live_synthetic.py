"""The synthetic market as a live source: new ticks only, deterministic, resumes at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from app.market.sources.base import Page, Source, SourceError
from app.market.sources.live_synthetic import SyntheticSource, parse_cursor
from app.market.store import TickStore
from app.market.ticks import TickArrays
from app.services.ingestion.pull import pull

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
    assert len(a.ticks) > 50 and not a.more
    assert parse_cursor(a.cursor) == (len(a.ticks), (a.ticks.time[-1], a.ticks.price[-1]))
    assert a.ticks.time[0] >= NOW - 1800 and a.ticks.time[-1] <= NOW
    assert fetch(src, a.cursor).ticks.time.size == 0  # no time passed, nothing new
    clock.t += 600
    b = fetch(src, a.cursor)
    assert len(b.ticks) > 0 and parse_cursor(b.cursor)[0] == len(a.ticks) + len(b.ticks)
    assert b.ticks.time[0] >= a.ticks.time[-1] and b.ticks.time[-1] <= clock.t
    assert b.ticks.trade_id[0] == str(len(a.ticks))  # ids are ordinals: no overlap


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
    assert list(got.trade_id) == list(whole.trade_id) and parse_cursor(cursor)[0] == len(whole)
    other = fetch(SyntheticSource(8, 600.0, clock=Clock(NOW + 3000)), None).ticks
    assert not np.array_equal(other.price[:50], whole.price[:50])


def test_start_drops_older_ticks() -> None:
    all_ = fetch(SyntheticSource(4, 3600.0, clock=Clock()), None).ticks
    start = float(all_.time[100])
    p = fetch(SyntheticSource(4, 3600.0, clock=Clock()), None, start=start)
    i = int(np.searchsorted(all_.time, start))
    np.testing.assert_array_equal(p.ticks.time, all_.time[i:])
    assert parse_cursor(p.cursor)[0] == len(all_) and p.ticks.trade_id[0] == str(i)


# ---------------------------------------------------------------- restarts


def pull_into(store: TickStore, src: SyntheticSource) -> int:
    return asyncio.run(pull(store, src, "synthetic", "BTC-USD")).new_ticks


def test_restart_resumes_at_once_with_times_continuing(tmp_path: Path) -> None:
    """A new instance (its market opened at its own clock) given the stored cursor hands
    out ticks in the very next pull: no silence while it regenerates the old count."""
    clock = Clock()
    with TickStore(tmp_path / "t.db") as store:
        first = SyntheticSource(3, 600.0, clock=clock)
        n1 = pull_into(store, first)
        clock.t += 600
        n1 += pull_into(store, first)
        before = store.read("synthetic", "BTC-USD")
        assert n1 == len(before) > 100
        clock.t += 900  # down for a quarter of an hour
        n2 = pull_into(store, SyntheticSource(3, 600.0, clock=Clock(clock.t)))
        assert n2 > 20  # the gap since the last stored tick, filled at once
        got = store.read("synthetic", "BTC-USD")
        assert len(got) == n1 + n2 == len(set(got.trade_id.tolist()))  # ids unique
        new = got[n1:]
        np.testing.assert_array_equal(got.time[:n1], before.time)
        assert new.time[0] >= before.time[-1] and np.all(np.diff(new.time) >= 0)
        assert new.time[-1] > clock.t - 300 and new.time[-1] <= clock.t  # reaches the clock
        assert new.trade_id.tolist() == [str(i) for i in range(n1, n1 + n2)]
        # a jump of tens of percent would mean a fresh market, not this one continued
        assert abs(new.price[0] / before.price[-1] - 1) < 0.02
        assert parse_cursor(store.cursor("synthetic", "BTC-USD"))[0] == n1 + n2
        # and it keeps going as the clock moves, like any live source
        clock.t += 300
        third = SyntheticSource(3, 600.0, clock=clock)
        assert pull_into(store, third) > 0
        clock.t += 300
        assert pull_into(store, third) > 0  # its own cursor: no resume, just the new ticks
        assert len(set(store.read("synthetic", "BTC-USD").trade_id.tolist())) == store.count(
            "synthetic", "BTC-USD"
        )


def test_a_long_downtime_is_not_replayed_as_a_burst() -> None:
    clock = Clock()
    a = fetch(SyntheticSource(5, 600.0, clock=clock), None)
    clock.t += 7 * 86_400  # a week
    b = fetch(SyntheticSource(5, 600.0, clock=clock), a.cursor)
    assert 20 < len(b.ticks) < 600  # about 600 s of ticks, not a week's 130,000
    assert b.ticks.time[0] >= clock.t - 600 - 1 and b.ticks.time[-1] <= clock.t
    assert b.ticks.trade_id[0] == str(len(a.ticks))
    assert abs(b.ticks.price[0] / a.ticks.price[-1] - 1) < 0.02  # from the last price on


def test_resuming_is_deterministic() -> None:
    a = fetch(SyntheticSource(2, 600.0, clock=Clock()), None)
    later = Clock(NOW + 1200)
    b1 = fetch(SyntheticSource(2, 600.0, clock=later), a.cursor)
    b2 = fetch(SyntheticSource(2, 600.0, clock=later), a.cursor)
    assert len(b1.ticks) > 0 and b1.cursor == b2.cursor
    np.testing.assert_array_equal(b1.ticks.time, b2.ticks.time)
    np.testing.assert_array_equal(b1.ticks.price, b2.ticks.price)
    other = fetch(
        SyntheticSource(2, 600.0, clock=later), fetch(SyntheticSource(2, 900.0, clock=Clock()), None).cursor
    )
    assert not np.array_equal(other.ticks.price[:20], b1.ticks.price[:20])  # seeded by the count too


def test_a_rerun_of_the_same_market_continues_the_same_path() -> None:
    """Same seed opened at the same time (a backfill over a fixed range run again): the
    cursor's tick is found in the new instance's market and what follows it is handed out."""
    c1 = Clock()
    one = SyntheticSource(7, 1800.0, clock=c1)
    a = fetch(one, None)
    c1.t += 900
    b = fetch(one, a.cursor)
    c2 = Clock()
    two = SyntheticSource(7, 1800.0, clock=c2)  # opened at the same time as `one`
    c2.t += 900
    again = fetch(two, a.cursor)
    np.testing.assert_array_equal(again.ticks.time, b.ticks.time)
    np.testing.assert_array_equal(again.ticks.price, b.ticks.price)
    assert list(again.ticks.trade_id) == list(b.ticks.trade_id) and again.cursor == b.cursor
    # nothing more on the same clock: the same cursor back, nothing twice
    p = fetch(SyntheticSource(7, 1800.0, clock=Clock()), a.cursor)
    assert len(p.ticks) == 0 and p.cursor == a.cursor


def test_a_page_that_was_not_stored_is_resumed_from_the_stored_cursor() -> None:
    clock = Clock()
    src = SyntheticSource(4, 600.0, clock=clock)
    a = fetch(src, None)
    clock.t += 300
    lost = fetch(src, a.cursor)  # handed out, but (say) the insert failed
    assert len(lost.ticks) > 0
    clock.t += 300
    p = fetch(src, a.cursor)  # the store still says `a`
    assert p.ticks.trade_id[0] == str(len(a.ticks)) and p.ticks.time[0] >= a.ticks.time[-1]
    assert parse_cursor(p.cursor)[0] == len(a.ticks) + len(p.ticks)


def test_an_older_bare_count_cursor_resumes_at_the_clock() -> None:
    clock = Clock()
    src = SyntheticSource(3, 3600.0, clock=clock)
    p = fetch(src, "5000")  # an older version's cursor: a count, no time or price
    assert len(p.ticks) <= 1 and parse_cursor(p.cursor)[0] == 5000 + len(p.ticks)
    clock.t += 600
    q = fetch(src, p.cursor)
    assert len(q.ticks) > 20 and q.ticks.trade_id[0] == str(5000 + len(p.ticks))
    assert q.ticks.time[0] >= NOW and q.ticks.time[-1] <= clock.t
    first = fetch(SyntheticSource(3, 3600.0, clock=Clock()), "0")  # nothing handed out: a first start
    assert len(first.ticks) > 100 and first.ticks.time[0] < NOW - 3000


@pytest.mark.parametrize("bad", ["x", "-1", "1:2", "1:nan:3", "1:2:0", "1:2:3:4", "a:1:2"])
def test_bad_cursor(bad: str) -> None:
    with pytest.raises(SourceError, match="reset the market's cursor"):
        fetch(SyntheticSource(1, 60.0, clock=Clock()), bad)
