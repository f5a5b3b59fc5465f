"""Markets: ingestion status, stored ticks, pull now, CSV import."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any, Literal

from fastapi import APIRouter, Query, Request, Response

from app.api.deps import IngestorDep, KeyDep, MarketPath, MarketsDep, SettingsDep
from app.api.errors import invalid
from app.api.market_schemas import CoverageOut, IdGapOut, ImportOut, MarketOut, PullOut, TicksOut, TimeGapOut
from app.api.openapi import responses
from app.market.coverage import DEFAULT_LIMIT as DEFAULT_GAPS
from app.market.ticks import write_csv_to
from app.services import coverage

router = APIRouter(tags=["markets"])

DEFAULT_LIMIT = 1000
MAX_TICKS = 100_000  # one answer: about 6 MB of JSON
MAX_GAPS = 10_000  # of each kind in one answer: about 1 MB of JSON

_STORE_READ = (503, "the tick store cannot be read (locked, unreadable); see Retry-After")
_CSV_EXAMPLE = "time,price,amount\n1795653448.0,6642.56,0.001\n1795653452.7,6642.9,0.25\n"


@router.get(
    "/markets",
    response_model=list[MarketOut],
    summary="Markets and their ingestion status",
    responses=responses(_STORE_READ, 500),
)
async def list_markets(ingestor: IngestorDep) -> list[dict[str, Any]]:
    """Each configured market (`scheduled: true`): last pull, last tick time, lag, ticks stored,
    last error, next run. Then every other market the store holds (imported, or configured
    once), `scheduled: false`, with its ticks and null pull fields."""
    # off the event loop: counting a 10M-tick market takes about 0.4 s, which /predict must not wait on
    return await asyncio.to_thread(ingestor.describe)


@router.get(
    "/markets/{exchange}/{symbol}/ticks",
    response_model=None,
    summary="Stored ticks",
    responses={
        200: {
            "model": TicksOut,
            "description": "JSON (a valid POST /predict body as it is), or CSV with format=csv",
            "content": {"text/csv": {"schema": {"type": "string"}, "example": _CSV_EXAMPLE}},
        },
        **responses(
            (422, "a bad market name or range, or `latest` with start, end or limit"), _STORE_READ, 500
        ),
    },
)
async def market_ticks(
    market: MarketPath,
    markets: MarketsDep,
    start: float | None = Query(
        None, allow_inf_nan=False, description="unix s, inclusive; not with `latest`"
    ),
    end: float | None = Query(None, allow_inf_nan=False, description="unix s, exclusive; not with `latest`"),
    limit: int | None = Query(
        None,
        ge=1,
        le=MAX_TICKS,
        description=f"at most this many, the oldest of "
        f"the range (default {DEFAULT_LIMIT});"
        " not with `latest`",
    ),
    latest: int | None = Query(
        None,
        ge=1,
        le=MAX_TICKS,
        description="the newest N ticks instead of a "
        "range (still oldest first); not "
        "with start, end or limit",
    ),
    format: Literal["json", "csv"] = Query("json", description="json, or csv (time,price,amount)"),
) -> Response:
    """Stored ticks of a market (none for a market with none), oldest first: by time range
    (`start`, `end`, the first `limit`), or the newest `latest`. The JSON answer can be posted
    to POST /predict as it is: `?latest=33` is a prediction's input for a model of sequence
    length 32."""
    if latest is not None:
        given = [name for name, v in (("start", start), ("end", end), ("limit", limit)) if v is not None]
        if given:
            raise invalid(
                ("query", "latest"),
                f"latest asks for the newest ticks; it does not combine "
                f"with {', '.join(given)}: send one or the other",
            )
        ticks = markets.latest(market, latest, ids=format == "csv")
    else:
        if start is not None and end is not None and end < start:
            raise invalid(("query", "end"), "end must not be before start")
        ticks = markets.ticks(
            market, start=start, end=end, limit=DEFAULT_LIMIT if limit is None else limit, ids=format == "csv"
        )
    if format == "csv":
        buf = io.StringIO()
        write_csv_to(ticks, buf)
        return Response(buf.getvalue(), media_type="text/csv")
    body = {
        "exchange": market.exchange,
        "symbol": market.symbol,
        "count": len(ticks),
        "ticks": [
            {"time": t, "price": p, "amount": a}
            for t, p, a in zip(ticks.time.tolist(), ticks.price.tolist(), ticks.amount.tolist(), strict=True)
        ],
    }
    return Response(json.dumps(body), media_type="application/json")


@router.get(
    "/markets/{exchange}/{symbol}/coverage",
    response_model=CoverageOut,
    summary="Gaps in a market's stored ticks",
    responses=responses(
        (
            404,
            "neither a configured market nor one with stored ticks",
            "kraken:ETH-USD is neither a configured market nor has stored ticks; add it to "
            "TICKCAST_MARKETS or import ticks",
        ),
        (422, "a bad market name, limit or gap_s"),
        _STORE_READ,
        500,
    ),
)
async def market_coverage(
    market: MarketPath,
    markets: MarketsDep,
    settings: SettingsDep,
    limit: int = Query(
        DEFAULT_GAPS,
        ge=1,
        le=MAX_GAPS,
        description="list at most this many gaps of each kind, the first in order; "
        "the counts are always complete",
    ),
    gap_s: float | None = Query(
        None,
        gt=0,
        allow_inf_nan=False,
        description="seconds without a trade that make a time gap "
        "(default: TICKCAST_GAP_S, which training uses)",
    ),
) -> CoverageOut:
    """Where a market's ticks have holes: every step of more than `gap_s` seconds between two
    stored ticks, and, where the exchange numbers its trades one by one, the runs of trade
    ids that were never stored (trades the exchange made that this store does not have).
    Training jobs cut their series at the same places, so no window spans a gap. An empty
    configured market has no gaps and null times."""
    g = settings.gap_s if gap_s is None else gap_s
    # off the event loop: a million ticks take a fraction of a second to look through
    c = await asyncio.to_thread(coverage.market_coverage, markets, market, gap_s=g, limit=limit)
    return CoverageOut(
        exchange=market.exchange,
        symbol=market.symbol,
        first_time=c.first_time,
        last_time=c.last_time,
        ticks=c.ticks,
        gap_s=c.gap_s,
        time_gaps=[TimeGapOut(start=t.start, end=t.end, seconds=t.seconds) for t in c.time_gaps],
        id_gaps=[
            IdGapOut(after_id=i.after_id, before_id=i.before_id, missing=i.missing, start=i.start, end=i.end)
            for i in c.id_gaps
        ],
        ids_consecutive=c.ids_consecutive,
        missing_ids=c.missing_ids,
        id_coverage=c.id_coverage,
        time_gap_count=c.time_gap_count,
        id_gap_count=c.id_gap_count,
        truncated=c.truncated,
    )


@router.post(
    "/markets/{exchange}/{symbol}/pull",
    dependencies=[KeyDep],
    response_model=PullOut,
    summary="Pull a market now",
    responses=responses(
        401,
        (
            404,
            "not a configured market",
            "kraken:BTC-USD is not a configured market; add it to TICKCAST_MARKETS",
        ),
        (500, "a market with no source, or a bug in the worker; nothing was lost"),
        502,
        (
            503,
            "the ingest worker is down or restarting, or the tick store cannot be "
            "written; nothing was lost, see Retry-After",
        ),
    ),
)
async def pull_market(market: MarketPath, ingestor: IngestorDep) -> PullOut:
    """Pull a configured market now (whatever the schedule says), from its cursor; answers with
    what was stored."""
    r = await ingestor.pull_now(market.exchange, market.symbol)
    return PullOut(
        exchange=market.exchange,
        symbol=market.symbol,
        new_ticks=r.new_ticks,
        pages=r.pages,
        cursor=r.cursor,
        seconds=r.seconds,
    )


@router.post(
    "/markets/{exchange}/{symbol}/import",
    dependencies=[KeyDep],
    response_model=ImportOut,
    summary="Import ticks from a CSV body",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/csv": {"schema": {"type": "string"}, "example": _CSV_EXAMPLE}},
        }
    },
    responses=responses(
        401,
        (
            413,
            "the body is over TICKCAST_MAX_BODY_BYTES (2 MB by default); nothing was "
            "stored. Store a large file from disk with `tickcast fetch csv SYMBOL --file "
            "FILE` instead (the market csv:SYMBOL), or raise the limit",
        ),
        (422, "a bad row (named) or a bad file, or a bad market name; nothing was stored"),
        (
            503,
            "the tick store cannot be written (locked, read-only, full); nothing was stored, see Retry-After",
        ),
        500,
    ),
)
async def import_ticks(market: MarketPath, request: Request, markets: MarketsDep) -> ImportOut:
    """Import a CSV (time,price,amount[,trade_id,side] or the ancestor's format) sent as the body.

    The body may be at most TICKCAST_MAX_BODY_BYTES (413 beyond it, saying what to do): a
    file larger than that is stored from disk by `tickcast fetch csv SYMBOL --file FILE`.
    The whole file is validated before anything is stored. A row with a trade id is known
    by its id. A row without one is known by (time, price, amount) and its ordinal among
    the body's identical rows, so the body is the source: importing a file again, or any
    part of it, stores nothing twice, and a file sent in parts split between timestamps
    stores exactly its rows. A split inside one timestamp is ambiguous without ids (a
    resend and a continuation look alike); identical rows on both sides of it are taken as
    one trade sent twice, i.e. for each (time, price, amount) the store keeps as many
    id-less trades as the most that one import (or pull) held. So split files between
    timestamps, or give trade ids. `rows - new_ticks` rows were already stored. The market
    is listed by GET /markets from then on (`scheduled: false` unless configured).
    """
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise invalid(("body",), "the body is not UTF-8 text CSV; nothing was stored") from e
    rows, new = await markets.import_csv(market, text)
    return ImportOut(exchange=market.exchange, symbol=market.symbol, rows=rows, new_ticks=new)
