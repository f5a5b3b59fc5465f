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
                    "leader": True,
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
        description="whether this market is pulled on the schedule now, here (TICKCAST_INGEST and "
        "scheduled and, with several replicas on PostgreSQL, this replica holds the market's lock)"
    )
    leader: bool | None = Field(
        None,
        description="this replica pulls the market (with replicas, it holds the market's ingestion "
        "lock); false: another replica or none pulls it; null for markets that are not scheduled",
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


class TimeGapOut(BaseModel):
    start: float = Field(description="time of the last tick before the gap (unix s)")
    end: float = Field(description="time of the first tick after it (unix s)")
    seconds: float = Field(description="end - start: longer than gap_s")


class IdGapOut(BaseModel):
    after_id: int = Field(description="the stored trade id just below the missing ones")
    before_id: int = Field(description="the stored trade id just above them")
    missing: int = Field(description="trade ids never stored: before_id - after_id - 1")
    start: float = Field(description="time of the tick with after_id (unix s)")
    end: float = Field(description="time of the tick with before_id (unix s)")


class CoverageOut(BaseModel):
    """Where a market's stored ticks have holes: stretches without a trade for longer than gap_s
    and, where the exchange numbers trades one by one, trade ids that were never stored.
    Training cuts its series at both, so no window spans one."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "exchange": "binance",
                    "symbol": "BTC-USDT",
                    "first_time": 1795600000.0,
                    "last_time": 1795686399.9,
                    "ticks": 912004,
                    "gap_s": 300.0,
                    "time_gaps": [{"start": 1795610000.5, "end": 1795613600.2, "seconds": 3599.7}],
                    "id_gaps": [
                        {
                            "after_id": 3401187,
                            "before_id": 3401290,
                            "missing": 102,
                            "start": 1795620000.1,
                            "end": 1795620004.7,
                        }
                    ],
                    "ids_consecutive": True,
                    "missing_ids": 102,
                    "id_coverage": 0.99989,
                    "time_gap_count": 1,
                    "id_gap_count": 1,
                    "truncated": False,
                }
            ]
        }
    )

    exchange: str = Field(description="the market's exchange")
    symbol: str = Field(description="the market's symbol")
    first_time: float | None = Field(description="time of the first stored tick (unix s); null: none stored")
    last_time: float | None = Field(description="time of the last stored tick (unix s)")
    ticks: int = Field(description="ticks stored")
    gap_s: float = Field(
        description="a longer step between two ticks is a time gap (TICKCAST_GAP_S, or the query)"
    )
    time_gaps: list[TimeGapOut] = Field(description="the first `limit` time gaps, in time order")
    id_gaps: list[IdGapOut] = Field(
        description="the first `limit` runs of missing trade ids, in id order; empty unless ids_consecutive"
    )
    ids_consecutive: bool = Field(
        description="whether the market numbers its trades one by one: every id a plain integer, "
        "and at least 90% of the steps between them +1; id gaps are looked for only then"
    )
    missing_ids: int = Field(
        description="trade ids never stored between the smallest and the largest, in all"
    )
    id_coverage: float | None = Field(
        description="stored ids among all from the smallest to the largest; null unless ids_consecutive"
    )
    time_gap_count: int = Field(description="time gaps in all (the list may hold fewer: see truncated)")
    id_gap_count: int = Field(description="runs of missing ids in all")
    truncated: bool = Field(description="whether either list holds fewer gaps than there are; raise `limit`")
