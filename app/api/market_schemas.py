"""The bodies of the market endpoints' answers: status, stored ticks, pulls and imports.

Like every answer (see `app.api.schemas`), each field carries a description and
each model an example: they are the OpenAPI document's text.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TickOut(BaseModel):
    time: float = Field(description="when the trade happened, unix seconds")
    price: float = Field(description="the trade's price")
    amount: float = Field(description="the traded quantity")


class TicksOut(BaseModel):
    """Stored ticks, oldest first; a valid POST /predict body as it is."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "exchange": "synthetic",
                    "symbol": "BTC-USD",
                    "count": 2,
                    "ticks": [
                        {"time": 1795653448.0, "price": 6642.56, "amount": 0.001},
                        {"time": 1795653452.7, "price": 6642.9, "amount": 0.25},
                    ],
                }
            ]
        }
    )

    exchange: str = Field(description="the market's exchange")
    symbol: str = Field(description="the market's symbol")
    count: int = Field(description="how many ticks follow")
    ticks: list[TickOut] = Field(description="the ticks, oldest first")


class MarketOut(BaseModel):
    """A market's ingestion status. Stored markets that are not configured (imported ones) are
    listed too, `scheduled: false`, with their stored ticks and null pull fields."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "exchange": "binance",
                    "symbol": "BTC-USD",
                    "scheduled": True,
                    "ingesting": True,
                    "last_pull": 1795653450.2,
                    "last_success": 1795653450.2,
                    "last_new_ticks": 12,
                    "last_error": None,
                    "pulls": 360,
                    "failures": 1,
                    "consecutive_failures": 0,
                    "worker_restarts": 0,
                    "ticks_stored": 183004,
                    "last_tick_time": 1795653448.0,
                    "lag_s": 2.9,
                    "cursor": "3401187",
                    "next_run": 1795653460.2,
                }
            ]
        }
    )

    exchange: str = Field(description="the market's exchange")
    symbol: str = Field(description="the market's symbol")
    scheduled: bool = Field(
        description="configured in TICKCAST_MARKETS (pulled on the schedule when "
        "ingesting); false for a market that only has stored ticks"
    )
    ingesting: bool = Field(
        description="whether this market is pulled on the schedule now (TICKCAST_INGEST and scheduled)"
    )
    last_pull: float | None = Field(
        description="when the last pull finished (unix s); null before the "
        "first and for markets that are not scheduled"
    )
    last_success: float | None = Field(
        None, description="when the last pull that worked finished (unix s): alert when it is old"
    )
    last_new_ticks: int | None = Field(description="ticks the last pull stored")
    last_error: str | None = Field(description="why the last pull failed; null when it worked")
    pulls: int | None = Field(description="pulls that worked since the service started")
    failures: int | None = Field(description="pulls that failed since the service started")
    consecutive_failures: int | None = Field(
        description="failed pulls since the last that worked: alert on this"
    )
    worker_restarts: int = Field(description="deaths of the ingest worker answered with a new one")
    ticks_stored: int = Field(description="ticks of this market in the store")
    last_tick_time: float | None = Field(description="time of the newest stored tick (unix s)")
    lag_s: float | None = Field(description="seconds from the newest stored tick to now")
    cursor: str | None = Field(description="where the next pull resumes (the source's own position)")
    next_run: float | None = Field(description="when the next scheduled pull starts (unix s)")


class MarketRef(BaseModel):
    exchange: str = Field(description="the market's exchange")
    symbol: str = Field(description="the market's symbol")
    scheduled: bool = Field(
        description="configured in TICKCAST_MARKETS; false for a market that only has stored ticks (imported)"
    )


class PullOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "exchange": "binance",
                    "symbol": "BTC-USD",
                    "new_ticks": 120,
                    "pages": 1,
                    "cursor": "3401187",
                    "seconds": 0.42,
                }
            ]
        }
    )

    exchange: str = Field(description="the market's exchange")
    symbol: str = Field(description="the market's symbol")
    new_ticks: int = Field(description="ticks stored by this pull (re-pulled ones count once)")
    pages: int = Field(description="pages fetched from the exchange")
    cursor: str | None = Field(description="where the next pull resumes")
    seconds: float = Field(description="how long the pull took")


class ImportOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"exchange": "kraken", "symbol": "ETH-USD", "rows": 4, "new_ticks": 4}]
        }
    )

    exchange: str = Field(description="the market's exchange")
    symbol: str = Field(description="the market's symbol")
    rows: int = Field(description="data rows in the CSV")
    new_ticks: int = Field(description="rows stored; `rows - new_ticks` were stored already")
