"""What only the PostgreSQL tick store has: its schema version table and upgrades, a connection the
server drops, replicas inserting into one market at once, reads in several pages, and a URL
whose password never shows. The promises both stores keep are tested in test_store.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg
import pytest

import app.cli
from app.database import redact
from app.market import pg_rows
from app.market.coverage import plain_ids
from app.market.loading import load_ticks
from app.market.pg_copy import plain_ints
from app.market.pg_store import MIGRATIONS, SCHEMA_VERSION, VERSION_TABLE, PgTickStore
from app.market.storage import StoreError
from app.market.ticks import TickArrays
from app.ml import checkpoint

EX, SYM = "bitstamp", "BTC-USD"
PASSWORD = "s3cret-Pa55"


def ticks(n: int, *, first_id: int | None = 1000, t0: float = 0.0) -> TickArrays:
    t = t0 + np.repeat(np.arange(n // 2 + 1, dtype=np.float64), 2)[:n]  # two trades a second
    ids = None if first_id is None else np.arange(first_id, first_id + n).astype(str).astype(object)
    side = np.where(np.arange(n) % 3 == 0, "buy", "sell").astype(object)
    return TickArrays(t, 100.0 + np.arange(n) % 7, np.full(n, 0.5), ids, side)


@pytest.fixture
def store(pg_url: str) -> Iterator[PgTickStore]:
    with PgTickStore(pg_url) as s:
        yield s


def tables(url: str) -> dict[str, list[str]]:
    """Every table of the database with its columns, and every index: the schema as it stands."""
    with psycopg.connect(url) as c:
        cols = c.execute(
            "SELECT table_name, column_name || ' ' || data_type FROM information_schema.columns"
            " WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
        ).fetchall()
        idx = c.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY indexname")
        out: dict[str, list[str]] = {"indexes": [r[0] for r in idx]}
    for table, col in cols:
        out.setdefault(table, []).append(col)
    return out


def sql(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        for s in statements:
            c.execute(s)


def with_password(url: str) -> str:
    """The URL with a password (the test server trusts 127.0.0.1, so it still connects)."""
    p = urlsplit(url)
    return urlunsplit((p.scheme, f"{p.username}:{PASSWORD}@{p.hostname}:{p.port}", p.path, "", ""))


def kill(url: str) -> int:
    """Terminate the tick stores' server connections, as a restart or an administrator would."""
    with psycopg.connect(url, autocommit=True) as c:
        rows = c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE 'tickcast-ticks-%'"
        ).fetchall()
    return len(rows)


# ---------------------------------------------------------------- schema versions


def test_a_new_database_gets_the_newest_schema_and_its_version_table(pg_url: str) -> None:
    with PgTickStore(pg_url) as s:
        assert s.schema_version == SCHEMA_VERSION == len(MIGRATIONS) >= 1
    with psycopg.connect(pg_url) as c:
        assert c.execute(f"SELECT version FROM {VERSION_TABLE}").fetchall() == [(SCHEMA_VERSION,)]
    schema = tables(pg_url)
    assert {"markets", "ticks", "cursors", VERSION_TABLE} <= set(schema)
    assert "time double precision" in schema["ticks"] and "seq bigint" in schema["ticks"]
    assert "trade_num bigint" in schema["ticks"] and "trade_text text" in schema["ticks"]
    unique = [i for i in schema["indexes"] if i.startswith("CREATE UNIQUE INDEX ticks_")]
    assert len(unique) == 4  # the primary key, and one for each kind of key a tick can have
    assert any("(market_id, trade_num) WHERE (trade_num IS NOT NULL)" in i for i in unique)
    assert any("(market_id, trade_text) WHERE (trade_text IS NOT NULL)" in i for i in unique)
    assert any('(market_id, "time", price, amount, ord) WHERE' in i for i in unique)


@pytest.mark.parametrize("version", range(SCHEMA_VERSION))
def test_every_earlier_version_is_upgraded(pg_url: str, version: int) -> None:
    """A database left at `version` (0: empty) by an older tickcast opens, upgraded to the newest."""
    sql(pg_url, *(stmt for step in MIGRATIONS[:version] for stmt in step))
    if version:
        sql(pg_url, f"CREATE TABLE {VERSION_TABLE} (version INTEGER NOT NULL)")
        sql(pg_url, f"INSERT INTO {VERSION_TABLE} VALUES ({version})")
    with PgTickStore(pg_url) as s:
        assert s.schema_version == SCHEMA_VERSION
        assert s.insert(EX, SYM, ticks(10)) == 10


def test_a_database_at_the_newest_version_opens_unchanged(pg_url: str) -> None:
    with PgTickStore(pg_url) as s:
        s.insert(EX, SYM, ticks(10), cursor="c1")
    before = tables(pg_url)
    with PgTickStore(pg_url) as s:
        assert s.schema_version == SCHEMA_VERSION
        assert s.count(EX, SYM) == 10 and s.cursor(EX, SYM) == "c1"
        assert s.insert(EX, SYM, ticks(10)) == 0
    assert tables(pg_url) == before


def test_a_newer_schema_is_refused_and_left_alone(pg_url: str) -> None:
    with PgTickStore(pg_url) as s:
        s.insert(EX, SYM, ticks(3))
    sql(pg_url, f"UPDATE {VERSION_TABLE} SET version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match=f"version {SCHEMA_VERSION + 1}.*upgrade tickcast"):
        PgTickStore(pg_url)
    with psycopg.connect(pg_url) as c:
        assert c.execute(f"SELECT version FROM {VERSION_TABLE}").fetchone() == (SCHEMA_VERSION + 1,)
        assert c.execute("SELECT count(*) FROM ticks").fetchone() == (3,)


# ---------------------------------------------------------------- a lost connection


def test_a_dropped_connection_raises_one_of_errors_and_the_next_call_reconnects(store: PgTickStore) -> None:
    store.insert(EX, SYM, ticks(20), cursor="c1")
    for call in (
        lambda: store.read(EX, SYM),
        lambda: store.insert(EX, SYM, ticks(10, first_id=5000, t0=100.0), cursor="c2"),
        lambda: store.markets(),
    ):
        assert kill(store.path) == 1
        with pytest.raises(store.errors) as failed:
            call()
        assert isinstance(failed.value, psycopg.OperationalError)
        # the next call connects again; the failed insert left nothing behind, cursor included
        assert store.count(EX, SYM) == 20 and store.cursor(EX, SYM) == "c1"
    assert store.insert(EX, SYM, ticks(10, first_id=5000, t0=100.0), cursor="c2") == 10
    assert store.read(EX, SYM).trade_id.tolist()[-1] == "5009"


def test_a_closed_store_says_so_with_one_of_errors(pg_url: str) -> None:
    s = PgTickStore(pg_url)
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.count(EX, SYM)


# ---------------------------------------------------------------- replicas


def test_two_stores_inserting_into_one_market_at_once_store_each_trade_once(pg_url: str) -> None:
    """Two replicas (two stores, two connections) pull the same trades in overlapping pages:
    with ids, and without (the same source ordinals on both sides)."""
    with_ids = ticks(3000)
    no_ids = ticks(3000, first_id=None).with_ordinals()
    stores = [PgTickStore(pg_url), PgTickStore(pg_url)]
    added = [0, 0]
    errors: list[BaseException] = []

    def pull(k: int) -> None:
        try:
            for i in range(k * 50, 3000, 200):  # pages of 200, the second replica shifted by 50
                added[k] += stores[k].insert(EX, SYM, with_ids[i : i + 200])
                added[k] += stores[k].insert(EX, "NOIDS", no_ids[i : i + 200])
            for i in range(0, k * 50, 200):
                added[k] += stores[k].insert(EX, SYM, with_ids[i : i + 200])
                added[k] += stores[k].insert(EX, "NOIDS", no_ids[i : i + 200])
        except BaseException as e:  # seen by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=pull, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert sum(added) == 6000
        got = stores[0].read(EX, SYM)
        assert sorted(got.trade_id.tolist()) == sorted(with_ids.trade_id.tolist())
        assert stores[1].count(EX, "NOIDS") == 3000
        _, seqs = stores[0].after(EX, SYM, None, 10_000, oldest=True)
        assert len(np.unique(seqs)) == 3000  # every stored tick has a seq of its own
    finally:
        for s in stores:
            s.close()


def test_batches_past_the_stored_keys_and_batches_among_them_store_the_same(store: PgTickStore) -> None:
    """A batch whose keys all come after the stored ones is copied straight in, any other is
    staged and sifted: pages in order, a page of ids from before, overlapping pages, with ids
    and without."""
    with_ids = ticks(400, first_id=1000)
    assert [
        store.insert(EX, SYM, with_ids[a:b]) for a, b in ((100, 200), (200, 300), (0, 150), (250, 400))
    ] == [
        100,
        100,
        100,
        100,
    ]
    assert store.read(EX, SYM).rows() == with_ids.rows()
    bare = ticks(400, first_id=None).with_ordinals()  # keyed by (time, price, amount, ordinal)
    pages = ((0, 100), (100, 200), (50, 150), (300, 400), (200, 350))
    assert [store.insert(EX, "BARE", bare[a:b]) for a, b in pages] == [100, 100, 0, 100, 100]
    assert store.read(EX, "BARE").rows() == bare.rows()


# ---------------------------------------------------------------- reads in pages


def test_reads_of_several_pages_equal_one_page(store: PgTickStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read longer than a page is read page by page, each resuming after the last (time, seq)
    of the one before: ties across a page boundary included, text ids and plain ones."""
    store.insert(EX, SYM, ticks(101))
    text = ticks(57, first_id=None)
    text = TickArrays(
        text.time, text.price, text.amount, np.array([f"id-{i}" for i in range(57)], dtype=object)
    )
    store.insert(EX, "TEXT", text)
    store.insert(EX, "TEXT", ticks(3, first_id=None, t0=100.0))  # no id on the last three

    def everything() -> list[object]:
        position = (30.0, 60)
        return [
            store.read(EX, SYM).rows(),
            store.read(EX, SYM, start=3, end=40, limit=50).rows(),
            store.read(EX, SYM, ids=False).rows(),
            store.latest(EX, SYM, 77).rows(),
            [
                (t.rows(), s.tolist())
                for t, s in (store.after(EX, SYM, position, 33, oldest=o) for o in (True, False))
            ],
            [(t.rows(), s.tolist()) for t, s in [store.before(EX, SYM, position, 45)]],
            store.read(EX, "TEXT").rows(),
            store.latest(EX, "TEXT", 10).rows(),
        ]

    whole = everything()
    monkeypatch.setattr(pg_rows, "PAGE", 4)
    assert everything() == whole
    assert whole[0] == ticks(101).rows() and len(whole[1]) == 50 and len(whole[3]) == 77
    assert whole[6][-4].trade_id == "id-56" and whole[6][-1].trade_id is None


# ---------------------------------------------------------------- plain integer ids


@pytest.mark.parametrize(
    "ids",
    [
        ["1", "2", "-5", "0"],
        ["042"], ["+7"], [" 7"], ["7 "], ["0_7"], ["-0"], ["00"], ["-"], ["1.0"], ["1e3"], ["0x10"],
        ["٤٢"], ["１２"], ["abc"],  # other scripts' digits: int() reads them, they are not plain
        ["9223372036854775807"], ["-9223372036854775808"], ["99999999999999999999"],
        ["9223372036854775806", "-9223372036854775807"],
        [np.int64(17), 18], [17.0],
    ],
)  # fmt: skip
def test_the_copy_reads_plain_ids_by_the_rule_of_coverage(ids: list[object]) -> None:
    """The fast COPY (ids as int8) is taken exactly where `coverage.plain_ids` says the ids are
    plain: any other id travels as text, as it was given."""
    given = np.array(ids, dtype=object)
    ours, rule = plain_ints(given), plain_ids(given)
    assert (ours is None) == (rule is None)
    assert ours is None or rule is None or ours.tolist() == rule.tolist()


def test_plain_ints_agree_with_the_rule_around_every_power_of_ten() -> None:
    """Where a number's length changes, and each way int() reads a longer text as the same number."""
    tens = 10 ** np.arange(19, dtype=np.int64)
    for v in np.concatenate([tens, tens - 1, -tens, 1 - tens, [0, 9223372036854775806]]).tolist():
        for text in (str(v), f"0{v}", f"+{v}", f" {v}", f"{v} ", f"{str(v)[:-1]}_{str(v)[-1]}"):
            given = np.array([text, "5"], dtype=object)
            ours, rule = plain_ints(given), plain_ids(given)
            assert (ours is None) == (rule is None), text
            assert ours is None or rule is None or ours.tolist() == rule.tolist()


def test_ids_that_look_numeric_but_are_not_plain_are_stored_as_given(store: PgTickStore) -> None:
    b = TickArrays(np.arange(4.0), np.ones(4), np.ones(4), np.array(["7", "007", "+7", "٧"], dtype=object))
    assert store.insert(EX, SYM, b) == 4
    assert store.read(EX, SYM).trade_id.tolist() == ["7", "007", "+7", "٧"]
    assert not store.gaps(EX, SYM, 300.0).ids_consecutive


# ---------------------------------------------------------------- secrets


def test_the_password_never_shows_in_errors(pg_url: str) -> None:
    url = with_password(pg_url)
    nowhere = urlunsplit(urlsplit(url)._replace(netloc=f"postgres:{PASSWORD}@127.0.0.1:1"))
    with pytest.raises(psycopg.OperationalError) as refused:
        PgTickStore(nowhere)
    assert PASSWORD not in str(refused.value) and "***" in str(refused.value)
    with PgTickStore(url) as s:
        assert s.path == url  # a worker reopens it, password and all
        s.insert(EX, SYM, ticks(2))
        assert PASSWORD not in repr(s)
        kill(pg_url)
        with pytest.raises(s.errors) as dropped:
            s.count(EX, SYM)
        assert PASSWORD not in str(dropped.value)
    with pytest.raises(StoreError) as closed:
        s.count(EX, SYM)
    assert PASSWORD not in str(closed.value) and "***" in str(closed.value)
    sql(pg_url, f"UPDATE {VERSION_TABLE} SET version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError) as too_new:
        PgTickStore(url)
    assert PASSWORD not in str(too_new.value) and "***" in str(too_new.value)


def test_tickcast_train_reads_a_market_from_a_url_and_records_it_without_the_password(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = with_password(pg_url)
    with PgTickStore(url) as s:
        s.insert(EX, SYM, ticks(3000, first_id=1))
    loaded = load_ticks(f"{EX}:{SYM}", store_path=url, ids=True)
    assert len(loaded.ticks) == 3000 and loaded.ticks.trade_id is not None
    assert loaded.info["source"] == f"store:{redact(url)}" and PASSWORD not in loaded.info["source"]
    with pytest.raises(ValueError, match="no ticks") as empty:
        load_ticks(f"{EX}:NONE", store_path=url)
    assert PASSWORD not in str(empty.value)
    out = tmp_path / "models"
    fast = [
        "--sequence_length",
        "16",
        "--hidden_size",
        "8",
        "--num_layers",
        "1",
        "--num_epochs",
        "1",
        "--quiet",
    ]
    assert app.cli.main(["train", "CNN", f"{EX}:{SYM}", "--store", url, "--out", str(out), *fast]) == 0
    assert PASSWORD not in capsys.readouterr().err
    (path,) = out.glob("*.pt")
    data = checkpoint.load(path).meta.data
    assert data["source"] == f"store:{redact(url)}" and data["n_ticks"] == 3000
    assert PASSWORD.encode() not in path.read_bytes()
