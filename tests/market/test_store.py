"""The tick store's promises (`storage.TickStorage`), kept by both backends: every test that takes
`store` runs on a SQLite file and on PostgreSQL (`database`, tests/conftest.py). What only one
backend has (SQLite's file, WAL and user_version) is tested on it alone; PostgreSQL's own in
test_pg_store.py."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.market.backends import open_tick_store
from app.market.storage import TickStorage
from app.market.store import SCHEMA_VERSION, StoreError, TickStore
from app.market.ticks import TickArrays, TickError

EX, SYM = "bitstamp", "BTC-USD"


def ticks(
    time: list[float],
    price: list[float] | None = None,
    amount: list[float] | None = None,
    trade_id: list[object] | None = None,
    side: list[str | None] | None = None,
    ordinal: list[int] | np.ndarray | None = None,
) -> TickArrays:
    n = len(time)
    return TickArrays(
        np.asarray(time, dtype=np.float64),
        np.asarray(price if price is not None else [100.0 + i for i in range(n)], np.float64),
        np.asarray(amount if amount is not None else [1.0] * n, np.float64),
        None if trade_id is None else np.array(trade_id, dtype=object),
        None if side is None else np.array(side, dtype=object),
        None if ordinal is None else np.asarray(ordinal),
    )


def as_rows(t: TickArrays) -> list[tuple]:
    return [(x.time, x.price, x.amount, x.trade_id, x.side) for x in t.rows()]


@pytest.fixture
def store(database: str) -> Iterator[TickStorage]:
    s = open_tick_store(database)
    try:
        yield s
    finally:
        s.close()


# ---------------------------------------------------------------- idempotency


def test_same_batch_twice_is_stored_once_with_ids(store: TickStorage) -> None:
    b = ticks([1, 2, 3], trade_id=["a", "b", "c"], side=["buy", "sell", None])
    assert store.insert(EX, SYM, b) == 3
    assert store.insert(EX, SYM, b) == 0
    assert store.count(EX, SYM) == 3
    assert as_rows(store.read(EX, SYM)) == as_rows(b)


def test_same_batch_twice_is_stored_once_without_ids(store: TickStorage) -> None:
    b = ticks([1, 1, 2, 2, 3], [10, 11, 10, 10, 12], [1, 2, 1, 1, 3])
    assert store.insert(EX, SYM, b) == 5
    assert store.insert(EX, SYM, b) == 0
    got = store.read(EX, SYM)
    assert as_rows(got) == as_rows(b)
    assert got.trade_id is None and got.side is None


def test_two_identical_trades_in_one_batch_are_both_kept(store: TickStorage) -> None:
    b = ticks([5, 5, 5], [10, 10, 10], [0.5, 0.5, 0.5])
    assert store.insert(EX, SYM, b) == 3
    assert store.insert(EX, SYM, b) == 0
    assert store.count(EX, SYM) == 3


def test_overlapping_batches_without_ids_on_a_timestamp_boundary(store: TickStorage) -> None:
    # time 2 holds two identical trades plus a different one, interleaved.
    t = [1, 2, 2, 2, 3, 3, 4]
    p = [10, 10, 11, 10, 12, 12, 13]
    a = [1, 1, 1, 1, 2, 2, 1]
    full = ticks(t, p, a)
    assert store.insert(EX, SYM, full[:4]) == 4  # 1, 2, 2, 2
    assert store.insert(EX, SYM, full[1:]) == 3  # resends all of time 2, adds 3, 3, 4
    assert store.insert(EX, SYM, full) == 0
    assert as_rows(store.read(EX, SYM)) == as_rows(full)


def test_source_ordinals_key_identical_trades_across_batches(store: TickStorage) -> None:
    """A source that numbers its id-less rows (ordinal) keeps a trade's key whatever batch
    brings it: three identical trades in three pages are three trades, and resending any
    page stores nothing. Numbered per batch, pages two and three look like resends."""
    full = ticks([1, 2, 2, 2, 3], [10, 11, 11, 11, 12], [1, 1, 1, 1, 1]).with_ordinals()
    assert full.ordinal.tolist() == [0, 0, 1, 2, 0]
    assert [store.insert(EX, SYM, full[i : i + 2]) for i in range(0, 5, 2)] == [2, 2, 1]
    assert [store.insert(EX, SYM, full[i : i + 1]) for i in range(5)] == [0] * 5
    assert as_rows(store.read(EX, SYM)) == as_rows(full)
    plain = ticks([1, 2, 2, 2, 3], [10, 11, 11, 11, 12])
    assert [store.insert("old", SYM, plain[i : i + 2]) for i in range(0, 5, 2)] == [2, 1, 1]


def test_ordinals_on_ticks_with_ids_are_ignored(store: TickStorage) -> None:
    b = ticks([1, 1, 1], [10, 10, 10], trade_id=["a", None, "b"]).with_ordinals()
    assert b.ordinal.tolist() == [-1, 0, -1]
    assert store.insert(EX, SYM, b) == 3 and store.insert(EX, SYM, b) == 0
    assert store.read(EX, SYM).trade_id.tolist() == ["a", None, "b"]


def test_whole_seconds_are_numbered_alike_by_source_and_by_batch(store: TickStorage) -> None:
    """Why no migration is needed: a batch holding whole seconds gets the same ordinals
    from the store's own numbering as from the source's, and a batch split inside a
    second (the old losses) got a prefix 0..k-1 of each run's numbers, so pulling the
    range again with source ordinals adds exactly the missing trades, never one twice."""
    rng = np.random.default_rng(4)
    t = np.repeat(np.arange(40.0), rng.integers(1, 12, 40))
    full = ticks(
        t.tolist(), rng.choice([10.0, 10.5], t.size).tolist(), rng.choice([1.0, 2.0], t.size).tolist()
    )
    numbered = full.with_ordinals()
    starts = np.flatnonzero(np.r_[True, t[1:] != t[:-1]])
    for a, b in zip(starts[:-1:3], starts[3::3], strict=False):  # batches of three whole seconds
        np.testing.assert_array_equal(full[a:b].with_ordinals().ordinal, numbered.ordinal[a:b])
    for i in range(0, len(full), 7):  # how an older version stored pages of 7: some lost
        store.insert(EX, SYM, full[i : i + 7])
    lost = len(full) - store.count(EX, SYM)
    assert lost > 0
    assert store.insert(EX, SYM, numbered) == lost
    got = store.read(EX, SYM)
    assert sorted(as_rows(got)) == sorted(as_rows(full))


def test_overlapping_batches_with_ids(store: TickStorage) -> None:
    ids = [f"t{i}" for i in range(6)]
    full = ticks([1, 1, 2, 3, 3, 4], [10, 10, 10, 11, 11, 12], trade_id=ids)
    assert store.insert(EX, SYM, full[:4]) == 4
    assert store.insert(EX, SYM, full[2:]) == 2
    assert as_rows(store.read(EX, SYM)) == as_rows(full)


def test_trade_id_decides_identity_when_present(store: TickStorage) -> None:
    # Identical-looking trades with different ids are different trades...
    assert store.insert(EX, SYM, ticks([1, 1], [10, 10], [1, 1], trade_id=["x", "y"])) == 2
    # ...and a known id is not stored again, even if its fields differ.
    assert store.insert(EX, SYM, ticks([7], [99], [3], trade_id=["x"])) == 0
    # Within one batch, a repeated id keeps the first occurrence.
    assert store.insert(EX, SYM, ticks([8, 9], [1, 2], trade_id=["z", "z"])) == 1
    assert store.read(EX, SYM).trade_id.tolist() == ["x", "y", "z"]
    assert store.read(EX, SYM).price.tolist() == [10.0, 10.0, 1.0]


def test_repeated_numeric_ids_in_one_batch_keep_their_first_tick(store: TickStorage) -> None:
    """Numeric ids out of order, repeated, beside ticks without one (PostgreSQL copies such
    batches a faster way than text ids: the same answers either way)."""
    b = ticks([1, 2, 2, 3, 3, 4], [10, 20, 21, 30, 31, 40], trade_id=["9", "7", None, "9", "", "8"])
    assert store.insert(EX, SYM, b) == 5
    assert store.insert(EX, SYM, b) == 0
    got = store.read(EX, SYM)
    assert got.price.tolist() == [10, 20, 21, 31, 40]
    assert got.trade_id.tolist() == ["9", "7", None, None, "8"]


def test_an_id_is_one_trade_whatever_batch_brings_it(store: TickStorage) -> None:
    """Numeric ids alone, then beside text ids and ticks without one, then alone again, in and
    out of order (PostgreSQL stores such batches different ways: the same trades either way)."""
    assert store.insert(EX, SYM, ticks([1, 2, 3], trade_id=["10", "11", "12"])) == 3
    assert store.insert(EX, SYM, ticks([3, 4, 5, 6], trade_id=["12", "x", None, "13"])) == 3
    assert store.insert(EX, SYM, ticks([6, 7], trade_id=["13", "x"])) == 0
    assert store.insert(EX, SYM, ticks([7, 8], trade_id=["9", "14"])) == 2  # 9: before the others
    assert store.insert(EX, SYM, ticks([8, 9], trade_id=["012", "12"])) == 1  # '012' is no 12
    got = store.read(EX, SYM)
    assert got.trade_id.tolist() == ["10", "11", "12", "x", None, "13", "9", "14", "012"]
    assert store.insert(EX, SYM, ticks([5], [102.0], trade_id=[None])) == 0  # the id-less tick again


def test_mixed_ids_and_missing_ids(store: TickStorage) -> None:
    b = ticks([1, 2, 2, 3], [10, 11, 11, 12], trade_id=["a", None, "", "d"])
    assert store.insert(EX, SYM, b) == 4
    assert store.insert(EX, SYM, b) == 0
    got = store.read(EX, SYM)
    assert got.trade_id.tolist() == ["a", None, None, "d"]


def test_numeric_trade_ids_are_stored_as_text(store: TickStorage) -> None:
    b = TickArrays(
        np.array([1.0, 2.0]), np.array([1.0, 2.0]), np.array([1.0, 1.0]),
        np.array([np.int64(17), 18], dtype=object),
    )  # fmt: skip
    assert store.insert(EX, SYM, b) == 2
    assert store.read(EX, SYM).trade_id.tolist() == ["17", "18"]
    again = ticks([1, 2], [1, 2], trade_id=["17", "18"])
    assert store.insert(EX, SYM, again) == 0


def test_empty_insert_stores_nothing_and_creates_no_market(store: TickStorage) -> None:
    assert store.insert(EX, SYM, TickArrays.empty()) == 0
    assert store.markets() == []


# ---------------------------------------------------------------- ordering and reads


def test_out_of_order_inserts_read_back_in_time_order(store: TickStorage) -> None:
    store.insert(EX, SYM, ticks([10, 11, 12], [1, 2, 3]))
    store.insert(EX, SYM, ticks([5, 11, 20], [4, 5, 6]))
    got = store.read(EX, SYM)
    assert got.time.tolist() == [5, 10, 11, 11, 12, 20]
    # Equal times keep arrival order: the first insert's tick at 11 comes first.
    assert got.price.tolist() == [4, 1, 2, 5, 3, 6]
    assert store.time_range(EX, SYM) == (5.0, 20.0)


def test_range_read_is_start_inclusive_end_exclusive(store: TickStorage) -> None:
    store.insert(EX, SYM, ticks([1, 2, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6]))
    assert store.read(EX, SYM, start=2, end=4).price.tolist() == [2, 3, 4]
    assert store.read(EX, SYM, start=2.5).time.tolist() == [3, 4, 5]
    assert store.read(EX, SYM, end=2).time.tolist() == [1]
    assert store.read(EX, SYM, start=2, limit=2).price.tolist() == [2, 3]
    assert store.read(EX, SYM, limit=100).time.tolist() == [1, 2, 2, 3, 4, 5]
    assert len(store.read(EX, SYM, limit=0)) == 0
    assert len(store.read(EX, SYM, start=6)) == 0
    assert len(store.read(EX, SYM, start=4, end=4)) == 0


def test_read_returns_exact_floats_and_dtypes(store: TickStorage) -> None:
    rng = np.random.default_rng(1)
    t = np.sort(1.7e9 + rng.random(1000) * 1e5)
    b = TickArrays(t, rng.lognormal(10, 2, 1000), rng.random(1000) * 1e-6)
    store.insert(EX, SYM, b)
    got = store.read(EX, SYM)
    for name in ("time", "price", "amount"):
        col = getattr(got, name)
        assert col.dtype == np.float64 and col.flags.c_contiguous
        np.testing.assert_array_equal(col, getattr(b, name))


def test_ids_false_and_markets_without_ids_skip_those_columns(store: TickStorage) -> None:
    store.insert(EX, SYM, ticks([1, 2], trade_id=["a", "b"], side=["buy", "sell"]))
    full = store.read(EX, SYM)
    assert full.side.tolist() == ["buy", "sell"]
    bare = store.read(EX, SYM, ids=False)
    assert bare.trade_id is None and bare.side is None
    assert bare.time.tolist() == [1, 2]
    store.insert("kraken", SYM, ticks([1, 2]))
    other = store.read("kraken", SYM)
    assert other.trade_id is None and other.side is None


def test_latest_returns_last_n_ascending(store: TickStorage) -> None:
    store.insert(EX, SYM, ticks([3, 4, 5], [3, 4, 5], trade_id=["c", "d", "e"]))
    store.insert(EX, SYM, ticks([1, 2, 5], [1, 2, 6], trade_id=["a", "b", "f"]))
    last = store.latest(EX, SYM, 3)
    assert last.time.tolist() == [4, 5, 5]
    assert last.price.tolist() == [4, 5, 6]
    assert last.trade_id.tolist() == ["d", "e", "f"]
    assert store.latest(EX, SYM, 100).time.tolist() == [1, 2, 3, 4, 5, 5]
    assert len(store.latest(EX, SYM, 0)) == 0
    assert len(store.latest("nowhere", "X", 5)) == 0


def test_before_and_after_by_position_keep_ties_in_arrival_order(store: TickStorage) -> None:
    """A position is (time, seq): three trades at t=2, then one more at t=2 stored later, which
    sorts after them and before t=3."""
    store.insert(EX, SYM, ticks([1, 2, 2, 2, 3, 4], [10, 20, 21, 22, 30, 40]))
    store.insert(EX, SYM, ticks([2], [23]))

    def at(result: tuple[TickArrays, np.ndarray]) -> list[tuple[float, float, int]]:
        t, seqs = result
        return list(zip(t.time.tolist(), t.price.tolist(), seqs.tolist(), strict=True))

    all_ = at(store.after(EX, SYM, None, 100, oldest=True))
    assert [p for _, p, _ in all_] == [10, 20, 21, 22, 23, 30, 40]
    seq = {p: s for _, p, s in all_}
    # before: the last n at or before the position, the tick at it included, oldest first
    assert at(store.before(EX, SYM, (2.0, seq[21]), 2)) == [(2, 20, seq[20]), (2, 21, seq[21])]
    assert [p for _, p, _ in at(store.before(EX, SYM, (2.0, seq[21]), 10))] == [10, 20, 21]
    assert [p for _, p, _ in at(store.before(EX, SYM, (2.0, seq[23]), 2))] == [22, 23]
    assert [p for _, p, _ in at(store.before(EX, SYM, (2.5, 0), 10))] == [10, 20, 21, 22, 23]
    assert at(store.before(EX, SYM, (0.5, 99), 5)) == []
    assert (
        at(store.before(EX, SYM, (9.0, 0), 0)) == [] and at(store.before("nowhere", "X", (9.0, 0), 5)) == []
    )
    # after(oldest=True): the first `limit` past the position (the default: the newest `limit`)
    past = (2.0, seq[21])
    assert [p for _, p, _ in at(store.after(EX, SYM, past, 2, oldest=True))] == [22, 23]
    assert [p for _, p, _ in at(store.after(EX, SYM, past, 2))] == [30, 40]
    assert [p for _, p, _ in at(store.after(EX, SYM, past, 100, oldest=True))] == [22, 23, 30, 40]
    assert [p for _, p, _ in at(store.after(EX, SYM, None, 2, oldest=True))] == [10, 20]
    assert at(store.after(EX, SYM, (4.0, seq[40]), 10, oldest=True)) == []


def test_count_time_range_and_markets(store: TickStorage) -> None:
    assert store.count(EX, SYM) == 0
    assert store.time_range(EX, SYM) is None
    assert len(store.read(EX, SYM)) == 0
    store.insert(EX, SYM, ticks([2.5, 7.25]))
    store.insert("binance", "ETHUSDT", ticks([1.0]))
    assert store.count(EX, SYM) == 2
    assert store.time_range(EX, SYM) == (2.5, 7.25)
    assert store.markets() == [("binance", "ETHUSDT"), (EX, SYM)]


def test_markets_are_isolated(store: TickStorage) -> None:
    a = ticks([1, 2], [10, 11], trade_id=["1", "2"])
    b = ticks([1, 2, 3], [20, 21, 22], trade_id=["1", "2", "3"])
    assert store.insert(EX, SYM, a) == 2
    assert store.insert(EX, "ETH-USD", b) == 3  # same ids, other market: all new
    assert store.insert("kraken", SYM, ticks([1, 2], [10, 11])) == 2
    assert store.read(EX, SYM).price.tolist() == [10, 11]
    assert store.read(EX, "ETH-USD").price.tolist() == [20, 21, 22]
    assert store.count("kraken", SYM) == 2
    assert store.time_range(EX, "ETH-USD") == (1.0, 3.0)
    assert store.latest(EX, SYM, 1).price.tolist() == [11]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "bad, reason",
    [
        (ticks([3, 4, 5], [1, float("nan"), 3]), "price is not a finite number"),
        (ticks([3, float("nan"), 5]), "time is not a finite number"),
        (ticks([3, 4, 5], [1, 0, 3]), "price must be > 0"),
        (ticks([3, 4, 5], [1, -2, 3]), "price must be > 0"),
        (ticks([3, 4, 5], amount=[1, -1, 1]), "amount must be >= 0"),
        (ticks([3, 5, 4]), "time goes backwards"),
        (ticks([3, 4, 5], side=["buy", "up", None]), "side must be"),
        (ticks([3, 3, 4], [1, 1, 2], ordinal=[0, 0, 0]), "row 1: ordinal 0 repeats"),
        (ticks([3, 3, 4], ordinal=[0, -1, 0]), "needs an ordinal >= 0"),
        (ticks([3, 4], ordinal=np.array([0.0, 1.0])), "ordinal must hold integers"),
    ],
)
def test_bad_input_raises_and_changes_nothing(store: TickStorage, bad: TickArrays, reason: str) -> None:
    good = ticks([1, 2], trade_id=["a", "b"])
    store.insert(EX, SYM, good)
    before = as_rows(store.read(EX, SYM))
    with pytest.raises(TickError, match=reason):
        store.insert(EX, SYM, bad)
    with pytest.raises(TickError):
        store.insert("new", "MARKET", bad)
    assert as_rows(store.read(EX, SYM)) == before
    assert store.markets() == [(EX, SYM)]
    # The store still works after a rejected insert.
    assert store.insert(EX, SYM, ticks([6], trade_id=["c"])) == 1


# ---------------------------------------------------------------- the file


def test_reopen_persists_data(database: str) -> None:
    b = ticks([1, 2, 2], [5, 6, 6], trade_id=["a", None, None], side=["buy", None, "sell"])
    s = open_tick_store(database)
    try:
        assert s.insert(EX, SYM, b) == 3
    finally:
        s.close()
    s = open_tick_store(database)
    try:
        assert s.path == database  # what a worker process opens again
        assert as_rows(s.read(EX, SYM)) == as_rows(b)
        assert s.insert(EX, SYM, b) == 0  # dedup survives reopening
        # Arrival order continues after reopening: a new tick at time 2 sorts last.
        assert s.insert(EX, SYM, ticks([2], [7])) == 1
        assert s.read(EX, SYM).price.tolist() == [5, 6, 6, 7]
    finally:
        s.close()


def test_a_sqlite_store_makes_its_folders_and_writes_ahead(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "t.db"
    with TickStore(path) as s:
        assert s.insert(EX, SYM, ticks([1])) == 1
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_schema_version_is_stored(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with TickStore(path) as s:
        assert s.schema_version == SCHEMA_VERSION >= 1
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    db.close()
    assert {"markets", "ticks"} <= tables


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with TickStore(path) as s:
        s.insert(EX, SYM, ticks([1]))
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match=f"version {SCHEMA_VERSION + 1}.*upgrade tickcast"):
        TickStore(path)
    # Refusing did not touch the file.
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    assert db.execute("SELECT COUNT(*) FROM ticks").fetchone()[0] == 1
    db.close()


def test_default_path_creates_parent_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with TickStore() as s:
        s.insert(EX, SYM, ticks([1]))
    assert (tmp_path / "data" / "tickcast.db").is_file()


def test_in_memory_store() -> None:
    with TickStore(":memory:") as s:
        assert s.insert(EX, SYM, ticks([1, 2])) == 2
        assert s.count(EX, SYM) == 2


def test_concurrent_inserts_from_threads(store: TickStorage) -> None:
    def work(k: int) -> None:
        for j in range(10):
            base = k * 1000 + j * 10
            b = ticks([float(base + i) for i in range(10)], trade_id=[f"{base + i}" for i in range(10)])
            store.insert(EX, SYM, b)
            store.read(EX, SYM)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count(EX, SYM) == 400
    assert np.all(np.diff(store.read(EX, SYM).time) > 0)
