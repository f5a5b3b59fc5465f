"""CSV file source: pages by row index, resumes from a cursor, names the bad row."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

from app.market.sources.base import MalformedResponse, Page, SourceError
from app.market.sources.csv_source import CsvSource
from app.market.sources.synthetic import SyntheticMarket
from app.market.ticks import TickArrays, write_csv


def fetch(src: CsvSource, cursor: str | None, start: float | None = None) -> Page:
    return asyncio.run(src.fetch("BTC-USD", cursor, start=start))


@pytest.fixture(scope="module")
def ticks() -> TickArrays:
    return SyntheticMarket(5).take(25_000)


@pytest.fixture
def path(tmp_path: Path, ticks: TickArrays) -> Path:
    p = tmp_path / "ticks.csv"
    write_csv(ticks, p)
    return p


def test_pages_and_cursor(path: Path, ticks: TickArrays) -> None:
    src = CsvSource(path)
    pages, cursor = [], None
    while True:
        p = fetch(src, cursor)
        pages.append(p)
        cursor = p.cursor
        if not p.more:
            break
    assert [len(p.ticks) for p in pages] == [10_000, 10_000, 5_000]
    assert [p.cursor for p in pages] == ["10000", "20000", "25000"]
    got = TickArrays.concat(p.ticks for p in pages)
    np.testing.assert_array_equal(got.time, ticks.time)
    np.testing.assert_array_equal(got.price, ticks.price)
    assert list(got.trade_id) == list(ticks.trade_id)
    end = fetch(src, "25000")
    assert len(end.ticks) == 0 and end.cursor == "25000" and not end.more
    assert src.pair("btc/usd") == "BTC-USD"


def test_resume_from_cursor_in_a_new_instance(path: Path, ticks: TickArrays) -> None:
    p = fetch(CsvSource(path, page_size=700), "12345")
    assert p.cursor == "13045" and p.more
    np.testing.assert_array_equal(p.ticks.time, ticks.time[12345:13045])


def test_start_without_cursor(path: Path, ticks: TickArrays) -> None:
    t = float(ticks.time[777])
    p = fetch(CsvSource(path, page_size=10), None, start=t)
    i = int(np.searchsorted(ticks.time, t))
    assert p.cursor == str(i + 10)
    np.testing.assert_array_equal(p.ticks.time, ticks.time[i : i + 10])


def test_grown_file_is_reread(tmp_path: Path, ticks: TickArrays) -> None:
    p = tmp_path / "grow.csv"
    write_csv(ticks[:100], p)
    src = CsvSource(p)
    assert fetch(src, None).cursor == "100"
    write_csv(ticks[:150], p)
    os.utime(p, ns=(1, 2))  # a different mtime even on coarse clocks
    q = fetch(src, "100")
    np.testing.assert_array_equal(q.ticks.time, ticks.time[100:150])


def test_bad_row_is_named(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("time,price,amount\n1,100,1\n2,abc,1\n3,100,1\n")
    with pytest.raises(MalformedResponse, match=r"row 3.*price is not a number"):
        fetch(CsvSource(p), None)
    p.write_text("time,price,amount\n1,100,1\n2,100,1\n1.5,100,1\n")
    with pytest.raises(MalformedResponse, match=r"row 4.*time goes backwards"):
        fetch(CsvSource(p), None)


def test_missing_file_and_bad_cursor(tmp_path: Path, path: Path) -> None:
    with pytest.raises(SourceError, match="check the path"):
        fetch(CsvSource(tmp_path / "nope.csv"), None)
    with pytest.raises(SourceError, match="cursor"):
        fetch(CsvSource(path), "-3")
    with pytest.raises(ValueError):
        CsvSource(path, page_size=0)
