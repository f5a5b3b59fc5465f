"""GET /markets/{exchange}/{symbol}/coverage through the real app: ticks imported with a time
gap and missing trade ids, listed as the dashboard reads them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.helpers.apps import make_settings

KEYS = {
    "exchange",
    "symbol",
    "first_time",
    "last_time",
    "ticks",
    "gap_s",
    "time_gaps",
    "id_gaps",
    "ids_consecutive",
    "missing_ids",
    "id_coverage",
    "time_gap_count",
    "id_gap_count",
    "truncated",
}


def csv(rows: list[tuple[float, int]]) -> str:
    return "time,price,amount,trade_id\n" + "".join(
        f"{t},{100 + i % 7},1,{tid}\n" for i, (t, tid) in enumerate(rows)
    )


# 40 trades a second apart (ids 1000..1039), ids 1040..1044 never stored, then after an hour
# without trades 20 more (ids 1045..1064), with one more id (1055) missing among them
ROWS = [(1_700_000_000.0 + i, 1000 + i) for i in range(40)] + [
    (1_700_003_700.0 + i, 1045 + i) for i in range(20) if i != 10
]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, markets=["kraken:ETH-USD"], gap_s=600)
    with TestClient(create_app(settings)) as c:
        r = c.post(
            "/markets/binance/BTC-USDT/import", content=csv(ROWS), headers={"content-type": "text/csv"}
        )
        assert r.status_code == 200 and r.json()["new_ticks"] == 59
        yield c


def test_coverage_lists_time_gaps_and_missing_trade_ids(client: TestClient) -> None:
    r = client.get("/markets/binance/BTC-USDT/coverage")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == KEYS
    assert body == {
        "exchange": "binance",
        "symbol": "BTC-USDT",
        "first_time": 1_700_000_000.0,
        "last_time": 1_700_003_719.0,
        "ticks": 59,
        "gap_s": 600.0,  # TICKCAST_GAP_S
        "time_gaps": [{"start": 1_700_000_039.0, "end": 1_700_003_700.0, "seconds": 3661.0}],
        "id_gaps": [
            {
                "after_id": 1039,
                "before_id": 1045,
                "missing": 5,
                "start": 1_700_000_039.0,
                "end": 1_700_003_700.0,
            },
            {
                "after_id": 1054,
                "before_id": 1056,
                "missing": 1,
                "start": 1_700_003_709.0,
                "end": 1_700_003_711.0,
            },
        ],
        "ids_consecutive": True,
        "missing_ids": 6,
        "id_coverage": pytest.approx(59 / 65),
        "time_gap_count": 1,
        "id_gap_count": 2,
        "truncated": False,
    }


def test_the_query_may_lower_the_threshold_and_cut_the_list(client: TestClient) -> None:
    body = client.get("/markets/binance/BTC-USDT/coverage", params={"gap_s": 1.5, "limit": 1}).json()
    assert body["gap_s"] == 1.5
    assert body["time_gap_count"] == 2  # the hour, and the 2 s where id 1055 is missing
    assert body["time_gaps"] == [{"start": 1_700_000_039.0, "end": 1_700_003_700.0, "seconds": 3661.0}]
    assert len(body["id_gaps"]) == 1 and body["id_gap_count"] == 2 and body["truncated"] is True
    assert client.get("/markets/binance/BTC-USDT/coverage", params={"gap_s": 7200}).json()["time_gaps"] == []


def test_a_market_without_consecutive_ids_has_time_gaps_only(client: TestClient) -> None:
    rows = "time,price,amount\n1,10,1\n2,10,1\n900,11,1\n"
    assert client.post("/markets/kraken/XBT-EUR/import", content=rows).status_code == 200
    body = client.get("/markets/kraken/XBT-EUR/coverage").json()
    assert body["time_gaps"] == [{"start": 2.0, "end": 900.0, "seconds": 898.0}]
    assert body["ids_consecutive"] is False and body["id_gaps"] == [] and body["id_coverage"] is None


def test_a_configured_market_with_no_ticks_has_no_gaps(client: TestClient) -> None:
    body = client.get("/markets/kraken/ETH-USD/coverage").json()
    assert body["ticks"] == 0 and body["first_time"] is None and body["last_time"] is None
    assert body["time_gaps"] == [] and body["id_gaps"] == [] and body["truncated"] is False


def test_an_unknown_market_is_a_404_that_says_what_makes_it_one(client: TestClient) -> None:
    r = client.get("/markets/bitstamp/BTC-USD/coverage")
    assert r.status_code == 404
    assert r.json()["detail"].startswith(
        "bitstamp:BTC-USD is neither a configured market nor has stored ticks"
    )
    assert "import ticks" in r.json()["detail"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 10_001}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"gap_s": 0}, "gap_s"),
        ({"gap_s": -60}, "gap_s"),
        ({"gap_s": "nan"}, "gap_s"),
        ({"gap_s": "inf"}, "gap_s"),
    ],
)
def test_a_bad_query_is_a_422_naming_the_field(
    client: TestClient, params: dict[str, object], field: str
) -> None:
    r = client.get("/markets/binance/BTC-USDT/coverage", params=params)
    assert r.status_code == 422
    assert [e["loc"] for e in r.json()["detail"]] == [["query", field]]


def test_a_bad_market_name_is_a_422(client: TestClient) -> None:
    r = client.get("/markets/bin ance/BTC-USDT/coverage")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "exchange"]
