"""A market's coverage: time gaps, id gaps where ids are consecutive, and series cut at them.

The SQLite store finds gaps by shortcuts (`app.market.sqlite_gaps`), the PostgreSQL store with
window functions (`app.market.pg_gaps`); training cuts ticks with numpy (`app.market.coverage`).
All keep one rule, so besides the cases spelled out here, every store answer (each test that
takes `store` runs on both backends) is checked against the numpy reading of the same ticks,
and the two stores against each other."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.market import sqlite_gaps
from app.market.backends import open_tick_store
from app.market.coverage import (
    Coverage,
    IdGap,
    TimeGap,
    consecutive_ids,
    gap_cuts,
    id_runs,
    split_at_gaps,
)
from app.market.pg_store import PgTickStore
from app.market.storage import TickStorage
from app.market.store import TickStore
from app.market.ticks import TickArrays

EX, SYM = "binance", "BTC-USDT"


def ticks(time: list[float] | np.ndarray, ids: list[object] | np.ndarray | None = None) -> TickArrays:
    t = np.asarray(time, dtype=np.float64)
    n = len(t)
    trade_id = None if ids is None else np.array([None if i is None else str(i) for i in ids], dtype=object)
    return TickArrays(t, np.linspace(100.0, 101.0, n), np.ones(n), trade_id)


@pytest.fixture
def store(database: str) -> Iterator[TickStorage]:
    s = open_tick_store(database)
    try:
        yield s
    finally:
        s.close()


def expected(t: TickArrays, gap_s: float) -> tuple[list[TimeGap], list[IdGap] | None]:
    """The numpy reading of the rule: every time gap, and every id gap (None: ids not consecutive)."""
    at = np.flatnonzero(t.time[1:] > t.time[:-1] + gap_s)
    time_gaps = [TimeGap(float(t.time[i]), float(t.time[i + 1])) for i in at]
    ids = consecutive_ids(t.trade_id)
    if ids is None:
        return time_gaps, None
    a, b, ta, tb = id_runs(ids, t.time)
    return time_gaps, [
        IdGap(int(x), int(y), int(y - x - 1), float(p), float(q))
        for x, y, p, q in zip(a, b, ta, tb, strict=True)
    ]


def agrees(store: TickStorage, gap_s: float, market: tuple[str, str] = (EX, SYM)) -> Coverage:
    """The store's coverage, checked against the numpy reading of its own ticks."""
    c = store.gaps(*market, gap_s, limit=10**6)
    stored = store.read(*market)
    time_gaps, id_gaps = expected(stored, gap_s)
    assert list(c.time_gaps) == time_gaps and c.time_gap_count == len(time_gaps)
    assert c.ids_consecutive == (id_gaps is not None)
    assert list(c.id_gaps) == (id_gaps or []) and c.id_gap_count == len(id_gaps or [])
    cuts = gap_cuts(stored, gap_s)
    assert len(cuts) <= c.time_gap_count + c.id_gap_count  # a time gap and an id gap may share a cut
    assert c.ticks == len(stored) and not c.truncated
    return c


# ---------------------------------------------------------------- time gaps


def test_time_gaps_are_steps_over_gap_s_and_name_the_ticks_either_side(store: TickStorage) -> None:
    store.insert(EX, SYM, ticks([10, 20, 20, 320, 620.5, 620.5, 621, 5000]))
    c = agrees(store, 300)
    # 20 -> 320 is exactly 300 s: not over it; ties are no step at all
    assert c.time_gaps == (TimeGap(320.0, 620.5), TimeGap(621.0, 5000.0))
    assert [g.seconds for g in c.time_gaps] == [300.5, 4379.0]
    assert (c.ticks, c.first_time, c.last_time, c.gap_s, c.time_gap_count) == (8, 10.0, 5000.0, 300.0, 2)
    assert not c.ids_consecutive and c.id_gaps == () and c.id_coverage is None and c.missing_ids == 0
    assert store.gaps(EX, SYM, 5000).time_gaps == ()
    assert len(store.gaps(EX, SYM, 0.25).time_gaps) == 5  # every step between distinct times


def test_an_unknown_or_empty_market_has_no_coverage_and_bad_thresholds_are_refused(
    store: TickStorage,
) -> None:
    assert store.gaps("nowhere", "X", 300) == Coverage.empty(300.0)
    store.insert(EX, SYM, ticks([]), cursor="c")  # a market with a cursor and no ticks
    empty = store.gaps(EX, SYM, 60)
    assert empty.ticks == 0 and empty.first_time is None and empty.time_gaps == ()
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="gap_s must be a positive number"):
            store.gaps(EX, SYM, bad)


def test_the_count_is_complete_when_the_list_is_cut(store: TickStorage) -> None:
    t = np.arange(50) * 1000.0  # every step a gap
    store.insert(EX, SYM, ticks(t, list(range(0, 100, 2))))  # every id step skips one
    c = store.gaps(EX, SYM, 300, limit=3)
    assert c.time_gap_count == 49 and len(c.time_gaps) == 3 and c.truncated
    assert c.time_gaps[0] == TimeGap(0.0, 1000.0)
    assert not c.ids_consecutive  # half the ids missing in 49 runs: not numbered one by one
    assert not store.gaps(EX, SYM, 300, limit=49).truncated
    assert store.gaps(EX, SYM, 300, limit=0).time_gaps == ()


def test_a_sparse_market_reads_its_times_and_a_dense_one_walks_them_to_the_same_gaps(
    store: TickStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(1)
    t = np.cumsum(rng.exponential(40.0, 3000))
    store.insert(EX, SYM, ticks(t))
    walked = agrees(store, 120)  # span / gap_s = 1000 ~ ticks / 3: read, not walked
    monkeypatch.setattr(sqlite_gaps, "WALK_SHARE", 0.01)
    assert agrees(store, 120) == walked and walked.time_gap_count > 100


# ---------------------------------------------------------------- id gaps


def test_missing_runs_of_consecutive_ids_are_id_gaps(store: TickStorage) -> None:
    ids = [i for i in range(1000, 1100) if not 1020 <= i <= 1022 and i != 1070]
    t = np.arange(len(ids), dtype=float)
    store.insert(EX, SYM, ticks(t, ids))
    c = agrees(store, 300)
    assert c.ids_consecutive and c.missing_ids == 4 and c.id_gap_count == 2
    assert c.id_gaps == (IdGap(1019, 1023, 3, 19.0, 20.0), IdGap(1069, 1071, 1, 66.0, 67.0))
    assert c.id_coverage == pytest.approx(96 / 100)
    assert c.time_gaps == ()


def test_an_id_gap_inside_one_timestamp_starts_and_ends_there(store: TickStorage) -> None:
    ids = [1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12]
    store.insert(EX, SYM, ticks([0, 0, 5, 5, 5, 6, 7, 8, 9, 10, 11], ids))
    c = agrees(store, 300)
    assert c.id_gaps == (IdGap(3, 5, 1, 5.0, 5.0),)
    assert gap_cuts(store.read(EX, SYM), 300).tolist() == [3]  # the tick with id 5 begins a series


@pytest.mark.parametrize(
    ("ids", "why"),
    [
        ([f"a{i}" for i in range(20)], "text ids"),
        ([f"{i:03d}" for i in range(20)], "leading zeros"),
        ([str(i) if i != 7 else None for i in range(20)], "a tick without an id"),
        ([str(i) if i != 7 else "+7" for i in range(20)], "a sign"),
        ([str(3 * i) for i in range(20)], "ids that skip on every step (shared by markets)"),
        (["1", "2"] + [str(10 * i) for i in range(1, 19)], "too many runs"),
        ([str(i) if i else "a" for i in range(20)], "one letter, which SQLite reads as 0"),
        (["9223372036854775806", "9223372036854775807"], "the int64 bound, where SQLite clamps"),
        (["5"], "one tick"),
    ],
)
def test_ids_that_are_not_consecutive_give_no_id_gaps(
    store: TickStorage, ids: list[object], why: str
) -> None:
    store.insert(EX, SYM, ticks(np.arange(len(ids), dtype=float), ids))
    c = agrees(store, 300)
    assert not c.ids_consecutive and c.id_gaps == () and c.id_gap_count == 0, why
    assert c.missing_ids == 0 and c.id_coverage is None


def test_ninety_percent_of_steps_by_one_is_the_line(store: TickStorage) -> None:
    """11 ids, 10 steps: one run missing keeps 90% of the steps at +1; two do not."""
    store.insert("a", "X", ticks(np.arange(11.0), [*range(10), 50]))
    store.insert("b", "X", ticks(np.arange(11.0), [*range(9), 30, 50]))
    assert agrees(store, 300, ("a", "X")).ids_consecutive
    assert not agrees(store, 300, ("b", "X")).ids_consecutive
    assert store.gaps("a", "X", 300).missing_ids == 40


def test_negative_and_zero_ids_are_plain_integers_too(store: TickStorage) -> None:
    store.insert(EX, SYM, ticks(np.arange(30.0), [*range(-10, 5), *range(6, 21)]))
    c = agrees(store, 300)
    assert c.ids_consecutive and c.id_gaps == (IdGap(4, 6, 1, 14.0, 15.0),)


def test_ids_out_of_time_order_are_read_whole_and_the_rule_is_on_their_set(
    store: TickStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_gaps, "BUCKET", 8)
    ids = [*range(100, 160), *range(40, 60), *range(61, 100)]  # a later file backfilled earlier ids
    store.insert(EX, SYM, ticks(np.arange(len(ids), dtype=float), ids))
    c = agrees(store, 300)
    assert c.ids_consecutive and c.id_gaps == (IdGap(59, 61, 1, 79.0, 80.0),)


@pytest.mark.parametrize(
    ("seed", "skip", "shuffled", "consecutive"),
    [
        (0, 0.001, False, True),
        (1, 0.02, False, True),
        (2, 0.05, True, True),
        (3, 0.08, False, True),
        (4, 0.2, False, False),
        (5, 0.3, True, False),
    ],
)
def test_the_store_and_numpy_agree_on_random_markets(
    store: TickStorage,
    monkeypatch: pytest.MonkeyPatch,
    seed: int,
    skip: float,
    shuffled: bool,
    consecutive: bool,
) -> None:
    """Small ranges and reads, so that every shortcut is taken: looks, halving, reading out,
    ids out of time order."""
    monkeypatch.setattr(sqlite_gaps, "BUCKET", 64)
    monkeypatch.setattr(sqlite_gaps, "FETCH_MAX", 16)
    rng = np.random.default_rng(seed)
    n = 3000
    dt = rng.exponential(1.0, n) * (rng.random(n) > 0.3)  # bursts of trades at one time
    dt[rng.choice(n, 5, replace=False)] += 500.0
    ids = 10**6 + np.cumsum(1 + (rng.random(n) < skip) * rng.integers(1, 30, n))
    if shuffled:
        ids[1000:1500] = rng.permutation(ids[1000:1500])
    store.insert(EX, SYM, ticks(np.cumsum(dt), ids))
    c = agrees(store, 100)
    assert c.ticks == n and c.time_gap_count == 5
    assert c.ids_consecutive == consecutive


def test_sqlite_and_postgresql_find_the_same_coverage(tmp_path: Path, pg_url: str) -> None:
    """The same markets in both stores give equal `Coverage`s, listed in full or cut short:
    consecutive ids with holes (in and out of time order), ids with a gap too many, text ids,
    a tick without an id, the int64 bound, and bursts of trades at one time."""
    rng = np.random.default_rng(7)
    n = 4000
    dt = rng.exponential(1.0, n) * (rng.random(n) > 0.3)
    dt[rng.choice(np.arange(1, n), 7, replace=False)] += 400.0
    t = np.cumsum(dt)
    holes = 10**6 + np.cumsum(1 + (rng.random(n) < 0.03) * rng.integers(1, 9, n))
    shuffled = holes.copy()
    shuffled[1000:2500] = rng.permutation(shuffled[1000:2500])
    markets = {
        "holes": ticks(t, holes),
        "shuffled": ticks(t, shuffled),
        "sparse": ticks(t, 10**6 + np.cumsum(1 + (rng.random(n) < 0.2) * 5)),
        "text": ticks(t, [f"x{i}" for i in range(n)]),
        "one_missing": ticks(t, [None if i == 17 else i for i in range(n)]),
        "bound": ticks(np.arange(3.0), ["9223372036854775805", "9223372036854775806", "9223372036854775807"]),
        "no_ids": ticks(t),
    }
    with TickStore(tmp_path / "t.db") as lite, PgTickStore(pg_url) as pg:
        for symbol, market in markets.items():
            assert lite.insert(EX, symbol, market) == pg.insert(EX, symbol, market) == len(market)
        for symbol in markets:
            for gap_s, limit in ((100.0, 10**6), (0.5, 3), (1e9, 0)):
                assert pg.gaps(EX, symbol, gap_s, limit) == lite.gaps(EX, symbol, gap_s, limit), symbol
        # what was compared: gaps of both kinds, and each way of not being consecutive
        holes = pg.gaps(EX, "holes", 100.0)
        assert holes.ids_consecutive and holes.id_gap_count > 50 and holes.time_gap_count == 7
        assert pg.gaps(EX, "shuffled", 100.0).ids_consecutive
        assert not any(
            pg.gaps(EX, m, 100.0).ids_consecutive for m in ("sparse", "text", "one_missing", "bound")
        )


# ---------------------------------------------------------------- cutting series


def test_split_at_gaps_cuts_at_time_and_id_gaps_into_views() -> None:
    t = ticks([0, 1, 2, 400, 401, 402, 403, 404, 405, 406, 407], [1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12])
    parts = split_at_gaps(t, 300)
    assert [p.time.tolist() for p in parts] == [[0, 1, 2], [400, 401], [402, 403, 404, 405, 406, 407]]
    assert all(np.shares_memory(p.time, t.time) for p in parts)
    assert [p.trade_id.tolist() for p in parts][1] == ["4", "5"]
    assert len(split_at_gaps(t, 1000)) == 2  # only the id gap is left
    assert split_at_gaps(ticks([]), 300) == []
    assert [len(p) for p in split_at_gaps(ticks([5.0]), 300)] == [1]


def test_ticks_without_consecutive_ids_are_cut_at_time_gaps_only() -> None:
    t = np.array([0.0, 1, 2, 900, 901])
    assert gap_cuts(ticks(t), 300).tolist() == [3]
    assert gap_cuts(ticks(t, ["a", "b", "c", "d", "e"]), 300).tolist() == [3]
    assert gap_cuts(ticks(t, [1, 5, 9, 13, 17]), 300).tolist() == [3]  # skips on every step: no rule
    assert gap_cuts(ticks(t, [1, 2, 2, 3, 4]), 300).tolist() == [3]  # one id twice: not numbered
    with pytest.raises(ValueError, match="gap_s"):
        gap_cuts(ticks(t), -5)
