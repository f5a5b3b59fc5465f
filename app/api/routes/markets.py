"""Markets: ingestion status, stored ticks, pull now, CSV import."""

from __future__ import annotations

import asyncio
import io
import json
import math
from typing import Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response

from app.api.deps import IngestorDep, KeyDep, SettingsDep, StoreDep
from app.market.sources.base import SourceError
from app.market.ticks import TickError, read_csv, write_csv_to
from app.services.ingest_pool import WorkerDown
from app.services.scheduler import IngestFailed, StoreUnavailable

router = APIRouter(tags=["markets"])

def check_name(*names: str) -> None:
    for n in names:
        if not (0 < len(n) <= 64) or not all(c.isalnum() or c in "-_." for c in n):
            raise HTTPException(422, f"{n!r} is not a valid exchange or symbol name")


@router.get("/markets")
async def list_markets(ingestor: IngestorDep) -> list[dict]:
    """Each configured market: last pull, last tick time, lag, ticks stored, last error, next run."""
    return ingestor.describe()


@router.get("/markets/{exchange}/{symbol}/ticks", responses={
    200: {"content": {"text/csv": {}}, "description": "JSON columns, or CSV with format=csv"}})
async def market_ticks(exchange: str, symbol: str, store: StoreDep,
                       start: float | None = Query(None, description="unix s, inclusive"),
                       end: float | None = Query(None, description="unix s, exclusive"),
                       limit: int = Query(1000, ge=1, le=100_000),
                       format: Literal["json", "csv"] = "json") -> Response:
    """Stored ticks by time range, oldest first."""
    check_name(exchange, symbol)
    for v in (start, end):
        if v is not None and not math.isfinite(v):
            raise HTTPException(422, "start and end must be finite numbers")
    if start is not None and end is not None and end < start:
        raise HTTPException(422, "end must not be before start")
    ticks = store.read(exchange, symbol, start=start, end=end, limit=limit)
    if format == "csv":
        buf = io.StringIO()
        write_csv_to(ticks, buf)
        return Response(buf.getvalue(), media_type="text/csv")
    body = {"exchange": exchange, "symbol": symbol, "count": len(ticks),
            "ticks": [{"time": t, "price": p, "amount": a} for t, p, a in
                      zip(ticks.time.tolist(), ticks.price.tolist(), ticks.amount.tolist(),
                          strict=True)]}
    return Response(json.dumps(body), media_type="application/json")


STORE_RETRY_S = 10  # a locked store frees up in seconds; a read-only or full one needs a person


@router.post("/markets/{exchange}/{symbol}/pull", dependencies=[KeyDep],
             responses={404: {"description": "not a configured market"},
                        500: {"description": "a market with no source, or a bug in the worker; "
                                             "nothing was lost"},
                        502: {"description": "the exchange failed; nothing was lost"},
                        503: {"description": "the ingest worker is down or restarting, or the tick store "
                                             "cannot be written; nothing was lost, see Retry-After"}})
async def pull_market(exchange: str, symbol: str, ingestor: IngestorDep) -> dict:
    """Pull now (whatever the schedule says); answers with what was stored."""
    try:
        r = await ingestor.pull_now(exchange, symbol)
    except SourceError as e:
        raise HTTPException(502, f"{e}; stored ticks and the cursor are unchanged, retry later") from e
    except WorkerDown as e:  # its message ends "retry in N s", N as in Retry-After
        raise HTTPException(503, str(e), headers={"Retry-After": str(e.retry_after_s)}) from e
    except StoreUnavailable as e:
        raise HTTPException(503, f"{e}; pages stored before it are kept with their cursor; make the store "
                                 f"writable (or wait for whoever holds its lock), then retry in "
                                 f"{STORE_RETRY_S} s", headers={"Retry-After": str(STORE_RETRY_S)}) from e
    except IngestFailed as e:
        raise HTTPException(500, f"{e}; pages stored before it are kept with their cursor") from e
    return {"exchange": exchange, "symbol": symbol, "new_ticks": r.new_ticks, "pages": r.pages,
            "cursor": r.cursor, "seconds": r.seconds}


@router.post("/markets/{exchange}/{symbol}/import", dependencies=[KeyDep],
             openapi_extra={"requestBody": {"required": True, "content": {"text/csv": {
                 "schema": {"type": "string"}}}}},
             responses={422: {"description": "a bad row (named) or a bad file; nothing stored"}})
async def import_ticks(exchange: str, symbol: str, request: Request, store: StoreDep,
                       settings: SettingsDep) -> dict:
    """Import a CSV (time,price,amount[,trade_id,side] or the ancestor's format) sent as the body.

    The whole file is validated before anything is stored. A row with a trade id is known
    by its id. A row without one is known by (time, price, amount) and its ordinal among
    the body's identical rows, so the body is the source: importing a file again, or any
    part of it, stores nothing twice, and a file sent in parts split between timestamps
    stores exactly its rows. A split inside one timestamp is ambiguous without ids (a
    resend and a continuation look alike); identical rows on both sides of it are taken as
    one trade sent twice, i.e. for each (time, price, amount) the store keeps as many
    id-less trades as the most that one import (or pull) held. So split files between
    timestamps, or give trade ids. `rows - new_ticks` rows were already stored.
    """
    check_name(exchange, symbol)
    raw = await request.body()
    try:
        ticks = read_csv(io.StringIO(raw.decode("utf-8"))).with_ordinals()
    except UnicodeDecodeError as e:
        raise HTTPException(422, "the body is not UTF-8 text CSV") from e
    except TickError as e:
        raise HTTPException(422, f"CSV {e}; nothing was stored") from e
    new = await asyncio.to_thread(store.insert, exchange, symbol, ticks)
    return {"exchange": exchange, "symbol": symbol, "rows": len(ticks), "new_ticks": new}
