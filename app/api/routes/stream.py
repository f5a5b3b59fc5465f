"""Server-Sent Events: each new tick of a market with its rise probability."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent

from app.api.deps import FeedsDep, IngestorDep, StoreDep
from app.api.routes.markets import check_name
from app.services.feeds import Feeds, FeedsClosed, TickEvent, TooManyClients

router = APIRouter(tags=["markets"])

RETRY_MS = 3000  # how long a browser waits before it reconnects


async def _streamable(exchange: str, symbol: str, feeds: FeedsDep, ingestor: IngestorDep,
                      store: StoreDep) -> Feeds:
    """Refusals that must be answered with a status, before the stream starts."""
    check_name(exchange, symbol)
    if (exchange, symbol) not in ingestor.status and store.time_range(exchange, symbol) is None:
        raise HTTPException(404, f"{exchange}:{symbol} is neither a configured market nor has "
                                 "stored ticks; add it to TICKCAST_MARKETS or import ticks")
    if feeds.closed:
        raise HTTPException(503, "the service is shutting down; reconnect in a moment",
                            headers={"Retry-After": "5"})
    if feeds.clients >= feeds.max_clients:
        raise HTTPException(503, f"{feeds.max_clients} streams are open, the most this service allows "
                                 "(TICKCAST_STREAM_MAX_CLIENTS); retry later",
                            headers={"Retry-After": "30"})
    return feeds


def _tick(e: TickEvent) -> ServerSentEvent:
    return ServerSentEvent(event="tick", id=e.id, raw_data=json.dumps(e.payload(), separators=(",", ":")))


@router.get("/stream/{exchange}/{symbol}", response_class=EventSourceResponse, responses={
    404: {"description": "not a configured market and no stored ticks"},
    503: {"description": "too many open streams, or shutting down (Retry-After)"}})
async def stream(
    exchange: str, symbol: str, feeds: Annotated[Feeds, Depends(_streamable)],
    backlog: int = Query(300, ge=0, le=10_000, description="recent ticks sent first (at most the "
                                                           "feed's memory, 1000)"),
    last_event_id: str | None = Header(None, max_length=100, description="sent by a reconnecting "
                                                                         "EventSource: resume after it"),
) -> AsyncIterator[ServerSentEvent]:
    """Each new tick of the market, scored by the active model, as it is stored.

    Events: `reset` first (data: exchange, symbol), unless a reconnect resumes where it
    left off: drop what you had, the ticks that follow begin the series. Then `tick` for
    each tick, oldest first, the recent `backlog` ones and then each new one (id: the
    tick's place in the market; data: time, price, amount, probability, decision,
    threshold, model_id; probability is null while no model is loaded). Comments keep
    an idle connection open. The stream ends when the client falls far behind or the
    service shuts down; an EventSource reconnects and resumes by itself.
    """
    try:
        sub = await feeds.subscribe(exchange, symbol, backlog=backlog, last_event_id=last_event_id)
    except (TooManyClients, FeedsClosed) as e:  # lost a race with the checks above
        yield ServerSentEvent(event="error", data={"detail": str(e)}, retry=RETRY_MS * 10)
        return
    try:
        if not sub.resumed:
            yield ServerSentEvent(event="reset", data={"exchange": exchange, "symbol": symbol},
                                  retry=RETRY_MS)
        for e in sub.first:
            yield _tick(e)
        while (e := await sub.next()) is not None:
            yield _tick(e)
    finally:
        feeds.unsubscribe(sub)
