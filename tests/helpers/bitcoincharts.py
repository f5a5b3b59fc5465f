"""A fake bitcoincharts /v1/trades.csv over a list of rows, for FakeExchange."""

from __future__ import annotations

from typing import Any

from tests.helpers.fake_exchange import Request, Response

Row = tuple[int, float, float]  # (unix second, price, amount): bitcoincharts has no trade ids


def csv_body(rows: list[Row]) -> str:
    return "".join(f"{t},{p:.12f},{a:.12f}\n" for t, p, a in rows)


class ChartsFake:
    """trades.csv: rows with time >= start, oldest first, at most `page` of them."""

    def __init__(self, truth: list[Row], page: int = 2000) -> None:
        self.truth, self.page = truth, page

    def __call__(self, req: Request) -> Any:
        assert req.path == "/v1/trades.csv"
        if req.query.get("symbol") != "bitstampUSD":
            return Response.text("unknown symbol", 400)
        start = int(req.query.get("start", "0"))
        if "start" not in req.query:  # no start: the most recent page
            return csv_body(self.truth[-self.page :])
        return csv_body([r for r in self.truth if r[0] >= start][: self.page])
