"""Sources without trade ids store exactly the source's trades, however they are paged.

A trade without an id is known by (time, price, amount) and its ordinal among the
source's identical trades at that time. These properties pin what that buys: for the
CSV source, bitcoincharts and `POST /markets/{e}/{s}/import`, the stored sequence
equals the source's whatever the page size (from 1 up), however a range is split
into pulls or imports, across restarts (a new source resuming from the stored
cursor), and pulling or importing it all again stores nothing twice. The series are
made of few distinct (price, amount) values in busy seconds, so identical rows are
everywhere and long same-second runs cross page boundaries.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.main import create_app
from app.market.sources.bitcoincharts import BitcoinchartsSource
from app.market.sources.csv_source import CsvSource
from app.market.store import TickStore
from app.market.ticks import TickArrays, ordinals, read_csv, write_csv, write_csv_to
from app.services.ingestion.pull import pull
from tests.helpers.apps import make_settings
from tests.helpers.bitcoincharts import ChartsFake
from tests.helpers.fake_exchange import FakeExchange

BITSTAMP = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "bitstamp_btcusd_2018-08.csv"
BITSTAMP_ROWS = 102_588
T0 = 1_315_922_016
SYM = "BTC-USD"
# Few values, so that identical (time, price, amount) rows are the rule, not the exception.
VALUES = [(100.0, 0.5), (100.0, 1.0), (100.5, 0.5), (99.5, 0.25)]
PROPS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Row = tuple[int, float, float]


@st.composite
def series(draw: st.DrawFn, max_group: int = 30, max_seconds: int = 12) -> list[Row]:
    """Whole seconds (gaps of 1-3 s), each holding 1..max_group trades drawn from VALUES."""
    rows: list[Row] = []
    t = T0
    for _ in range(draw(st.integers(1, max_seconds))):
        t += draw(st.integers(1, 3))
        for p, a in draw(st.lists(st.sampled_from(VALUES), min_size=1, max_size=max_group)):
            rows.append((t, p, a))
    return rows


def as_ticks(rows: list[Row]) -> TickArrays:
    return TickArrays(
        np.array([r[0] for r in rows], dtype=float),
        np.array([r[1] for r in rows]),
        np.array([r[2] for r in rows]),
    )


def assert_same(got: TickArrays, want: TickArrays) -> None:
    """The stored sequence is the source's, row for row, in order."""
    assert len(got) == len(want)
    np.testing.assert_array_equal(got.time, want.time)
    np.testing.assert_array_equal(got.price, want.price)
    np.testing.assert_array_equal(got.amount, want.amount)


async def pull_with(
    store: TickStore,
    make: type | object,
    exchange: str,
    *,
    start: float | None = None,
    max_pages: int = 1_000_000,
    **kw: object,
) -> int:
    src = make(**kw)  # type: ignore[operator]
    try:
        return (await pull(store, src, exchange, SYM, start=start, max_pages=max_pages)).new_ticks
    finally:
        await src.aclose()


async def repull(store: TickStore, src: object, exchange: str, start: float | None = None) -> int:
    """The whole range again from the beginning, ignoring the stored cursor."""
    new, cursor = 0, None
    try:
        while True:
            page = await src.fetch(SYM, cursor, start=start if cursor is None else None)  # type: ignore[attr-defined]
            new += store.insert(exchange, SYM, page.ticks)
            cursor = page.cursor
            if not page.more:
                return new
    finally:
        await src.aclose()  # type: ignore[attr-defined]


# ---------------------------------------------------------------- CSV file


def csv_source_run(path: Path, size: int, split: int, size2: int, want: TickArrays) -> None:
    """Pull `split` pages of `size`, restart with pages of `size2`; then pull it all again."""
    with TickStore(":memory:") as store:

        async def go() -> tuple[int, int]:
            a = await pull_with(store, CsvSource, "csv", path=path, page_size=size, max_pages=split)
            b = await pull_with(store, CsvSource, "csv", path=path, page_size=size2)
            return a, b

        a, b = asyncio.run(go())
        assert a + b == len(want) == store.count("csv", SYM)
        assert_same(store.read("csv", SYM), want)
        assert store.cursor("csv", SYM) == str(len(want))
        assert asyncio.run(repull(store, CsvSource(path, page_size=size2 + size), "csv")) == 0
        assert store.count("csv", SYM) == len(want)


@PROPS
@given(rows=series(), size=st.integers(1, 40), split=st.integers(0, 20), size2=st.integers(1, 40))
@example(rows=[(T0, 100.0, 0.5)] * 25 + [(T0 + 1, 100.0, 0.5)] * 3, size=1, split=7, size2=2)
def test_csv_source_stores_the_file_whatever_the_paging(
    rows: list[Row], size: int, split: int, size2: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ticks.csv"
        write_csv(as_ticks(rows), path)
        csv_source_run(path, size, split, size2, as_ticks(rows))


def test_csv_source_one_long_run_every_page_size(tmp_path: Path) -> None:
    """One second of 60 identical trades between busier seconds: every page size from 1 to 61."""
    rows = (
        [(T0, 100.0, 0.5)] * 3
        + [(T0 + 1, 100.0, 0.5)] * 60
        + [(T0 + 1, 99.5, 0.25)] * 5
        + [(T0 + 2, 100.0, 0.5)] * 4
    )
    path = tmp_path / "run.csv"
    write_csv(as_ticks(rows), path)
    for size in range(1, len(rows) + 1):
        csv_source_run(path, size, 3, size, as_ticks(rows))


# ---------------------------------------------------------------- bitcoincharts


@pytest.fixture(scope="module")
def charts() -> Iterator[tuple[FakeExchange, ChartsFake]]:
    fake = ChartsFake([], 2000)
    with FakeExchange(fake) as fx:
        yield fx, fake


@st.composite
def charts_case(draw: st.DrawFn) -> tuple[list[Row], int]:
    """A page size and a series whose busiest second fits in a page: the API pages by
    whole seconds, so a second of more trades than a page cannot be reached by anyone."""
    size = draw(st.integers(1, 25))
    return draw(series(max_group=size, max_seconds=10)), size


@PROPS
@given(case=charts_case(), split=st.integers(0, 15), size2=st.integers(0, 10))
@example(case=([(T0 + 1, 100.0, 0.5)] * 9 + [(T0 + 2, 100.0, 0.5)] * 9, 9), split=1, size2=0)
def test_bitcoincharts_stores_the_market_whatever_the_paging(
    charts: tuple[FakeExchange, ChartsFake], case: tuple[list[Row], int], split: int, size2: int
) -> None:
    rows, size = case
    fx, fake = charts
    fake.truth = rows

    def source(page: int) -> BitcoinchartsSource:
        fake.page = page
        src = BitcoinchartsSource(fx.url, min_interval_s=0.0, backoff_s=0.01, timeout=5.0)
        src.page_size = page
        return src

    with TickStore(":memory:") as store:

        async def go() -> tuple[int, int]:
            a = await pull_with(store, lambda: source(size), "bitcoincharts", start=T0, max_pages=split)
            # a restart: a new source resumes from the stored cursor (with pages as large or larger)
            b = await pull_with(store, lambda: source(size + size2), "bitcoincharts", start=T0)
            return a, b

        a, b = asyncio.run(go())
        assert a + b == len(rows) == store.count("bitcoincharts", SYM)
        assert_same(store.read("bitcoincharts", SYM), as_ticks(rows))
        assert asyncio.run(repull(store, source(size + size2), "bitcoincharts", T0)) == 0
        assert store.count("bitcoincharts", SYM) == len(rows)


# ---------------------------------------------------------------- POST /import


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path_factory.mktemp("app")))) as c:
        yield c


_markets = itertools.count()


def post(client: TestClient, symbol: str, rows: list[Row]) -> dict:
    buf = io.StringIO()
    write_csv_to(as_ticks(rows), buf)
    r = client.post(
        f"/markets/import/{symbol}/import", content=buf.getvalue(), headers={"content-type": "text/csv"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == len(rows)
    return r.json()


def stored(client: TestClient, symbol: str) -> TickArrays:
    return client.app.state.services.store.read("import", symbol)  # type: ignore[attr-defined]


def held(ticks: TickArrays) -> Counter[Row]:
    return Counter(zip(ticks.time.tolist(), ticks.price.tolist(), ticks.amount.tolist(), strict=True))


def cut(rows: list[Row], cuts: list[int]) -> list[list[Row]]:
    return [rows[i:j] for i, j in zip([0, *cuts], [*cuts, len(rows)], strict=True)]


@PROPS
@given(rows=series(), data=st.data())
def test_import_split_between_timestamps_stores_the_file(
    client: TestClient, rows: list[Row], data: st.DataObject
) -> None:
    symbol = f"S{next(_markets)}"
    between = [i for i in range(1, len(rows)) if rows[i][0] != rows[i - 1][0]]
    cuts = sorted(data.draw(st.sets(st.sampled_from(between)))) if between else []
    parts = cut(rows, cuts)
    order = data.draw(st.permutations(range(len(parts))))
    assert sum(post(client, symbol, parts[k])["new_ticks"] for k in order) == len(rows)
    # sent in any order, read back in time order; in order, the very sequence of the file
    assert held(stored(client, symbol)) == Counter(rows)
    if list(order) == sorted(order):
        assert_same(stored(client, symbol), as_ticks(rows))
    # the whole file again, and any slice of it, stores nothing
    i, j = sorted(data.draw(st.tuples(st.integers(0, len(rows)), st.integers(0, len(rows)))))
    assert post(client, symbol, rows)["new_ticks"] == 0
    if j > i:
        assert post(client, symbol, rows[i:j])["new_ticks"] == 0
    assert len(stored(client, symbol)) == len(rows)


@PROPS
@given(rows=series(max_group=12), data=st.data())
def test_import_split_inside_a_second_follows_the_documented_rule(
    client: TestClient, rows: list[Row], data: st.DataObject
) -> None:
    """Wherever a file is cut, nothing is stored twice: for each (time, price, amount) the
    store holds as many as the most that one import held (the route's documented rule).
    So the cuts are exact when no identical trade is in two parts, and lose only the
    identical trades on both sides of a cut inside a second, which look like a resend."""
    symbol = f"S{next(_markets)}"
    cuts = sorted(
        c for c in data.draw(st.sets(st.integers(1, max(1, len(rows) - 1)), max_size=4)) if c < len(rows)
    )
    parts = cut(rows, cuts)
    for part in parts:
        post(client, symbol, part)
    got = stored(client, symbol)
    most: Counter[Row] = Counter()
    for part in parts:
        most |= Counter(part)  # per key, the most that one part held
    assert held(got) == most and len(got) <= len(rows)
    if not any(n > 1 for n in Counter(k for part in parts for k in set(part)).values()):
        assert_same(got, as_ticks(rows))


# ---------------------------------------------------------------- the real Bitstamp file


@pytest.fixture(scope="module")
def bitstamp() -> TickArrays:
    if not BITSTAMP.exists():
        pytest.skip(f"the Bitstamp sample {BITSTAMP.resolve()} is not in this checkout")
    return read_csv(BITSTAMP)


@pytest.mark.parametrize("size", [10, 500, 10_000])
@pytest.mark.real_data
def test_bitstamp_file_is_stored_whole_at_any_page_size(bitstamp: TickArrays, size: int) -> None:
    assert len(bitstamp) == BITSTAMP_ROWS
    with TickStore(":memory:") as store:
        new = asyncio.run(pull_with(store, CsvSource, "csv", path=BITSTAMP, page_size=size))
        assert new == BITSTAMP_ROWS == store.count("csv", SYM)
        assert_same(store.read("csv", SYM), bitstamp)


@pytest.mark.real_data
def test_bitstamp_file_page_by_page_then_restarted(bitstamp: TickArrays) -> None:
    """Pages of one row over the first 3,000 (each repeated trade split from its twin by a
    page boundary), then a restart that pulls the rest in big pages."""
    assert (ordinals(bitstamp[:3000]) > 0).sum() >= 25  # repeats, identical in every field
    with TickStore(":memory:") as store:
        first = asyncio.run(pull_with(store, CsvSource, "csv", path=BITSTAMP, page_size=1, max_pages=3000))
        assert first == 3000
        assert_same(store.read("csv", SYM), bitstamp[:3000])
        rest = asyncio.run(pull_with(store, CsvSource, "csv", path=BITSTAMP, page_size=10_000))
        assert first + rest == BITSTAMP_ROWS
        assert_same(store.read("csv", SYM), bitstamp)
        assert asyncio.run(repull(store, CsvSource(BITSTAMP, page_size=777), "csv")) == 0
