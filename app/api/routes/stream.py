"""Server-Sent Events: each new tick of a market with its rise probability."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app.api.deps import FeedsDep, MarketPath, MarketsDep
from app.api.errors import invalid
from app.api.openapi import responses
from app.market.markets import Market
from app.services.feeds import Feeds, FeedsClosed, Seat, Subscription, TickEvent

router = APIRouter(tags=["markets"])

RETRY_MS = 3000  # how long a browser waits before it reconnects
KEEPALIVE_S = 15.0  # a comment on an idle stream, so proxies and clients see it is alive
MAX_BACKLOG = 1000  # the recent ticks a feed keeps (Feeds' ring): more cannot be sent, so it is refused

# One event, as a client parses it (FastAPI's SSE convention: `itemSchema` describes each event).
_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {
            "type": "string",
            "enum": ["reset", "tick", "error"],
            "description": "reset: the ticks that follow begin the series; tick: one tick and its "
            "prediction; error: the stream ends (the service is shutting down)",
        },
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "JSON: for reset exchange and symbol; for tick time, price, amount, "
            "probability (null while no model is loaded), decision, threshold, "
            "model_id, calibrator_version, model_age_s, train_start, train_end (as POST /predict), "
            "data_age_s and ingestion_lag_s (as GET /predict/{exchange}/{symbol}, at the update "
            "that brought the tick); for error detail",
        },
        "id": {
            "type": "string",
            "description": "a tick's place in the market; a reconnecting client "
            "sends the last one as Last-Event-ID",
        },
        "retry": {
            "type": "integer",
            "minimum": 0,
            "description": "milliseconds a client waits before it reconnects",
        },
    },
}
_EXAMPLE = (
    'event: reset\nretry: 3000\ndata: {"exchange": "synthetic", "symbol": "BTC-USD"}\n\n'
    'event: tick\nid: 1795653448.0_6032\ndata: {"time":1795653448.0,"price":6642.56,'
    '"amount":0.001,"probability":0.59,"decision":true,"threshold":0.3375,'
    '"model_id":"cnn-20261125-194816-1cd8d3","calibrator_version":0,"model_age_s":86412.5,'
    '"train_start":1795560000.0,"train_end":1795566000.0,"data_age_s":1.2,"ingestion_lag_s":0.9}\n\n'
)


async def _streamable(market: MarketPath, markets: MarketsDep) -> Market:
    """Refusals that must be answered with a status, before the stream starts (the client
    limit is the endpoint's own, once every parameter is valid): NotAMarket, a 404."""
    markets.require(market)
    return market


class _SeatedStream(StreamingResponse):
    """Gives the stream's seat back however the response ends: the events ran to their end,
    the client left, the body was never started, or sending failed."""

    def __init__(self, content: AsyncIterator[bytes], seat: Seat, **kw: Any) -> None:
        super().__init__(content, **kw)
        self.seat = seat

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.seat.release()


def _event(name: str, data: str, id: str | None = None, retry: int | None = None) -> str:
    head = f"event: {name}\n" + (f"id: {id}\n" if id else "") + (f"retry: {retry}\n" if retry else "")
    return f"{head}data: {data}\n\n"


def _ticks(events: list[TickEvent]) -> bytes:
    return "".join(_event("tick", e.json, e.id) for e in events).encode()


async def _events(
    feeds: Feeds, seat: Seat, market: Market, backlog: int, last_event_id: str | None
) -> AsyncIterator[bytes]:
    """The wire format written by hand: each update is one write per client, whatever its size
    (FastAPI's per-item SSE machinery cost /predict's p99 4x with 20 dashboards open)."""
    try:
        sub: Subscription = await feeds.subscribe(
            market.exchange, market.symbol, backlog=backlog, last_event_id=last_event_id, seat=seat
        )
    except FeedsClosed as e:  # the service began shutting down while this stream was joining
        yield _event("error", json.dumps({"detail": str(e)}), retry=RETRY_MS * 10).encode()
        return
    try:
        head = (
            ""
            if sub.resumed
            else _event(
                "reset", json.dumps({"exchange": market.exchange, "symbol": market.symbol}), retry=RETRY_MS
            )
        )
        yield head.encode() + _ticks(sub.first)
        while True:
            try:
                events = await asyncio.wait_for(sub.drain(), KEEPALIVE_S)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if events is None:
                return
            yield _ticks(events)
    finally:
        feeds.unsubscribe(sub)


@router.get(
    "/stream/{exchange}/{symbol}",
    response_class=StreamingResponse,
    summary="Live ticks with their predictions (Server-Sent Events)",
    responses={
        200: {
            "content": {"text/event-stream": {"itemSchema": _EVENT, "example": _EXAMPLE}},
            "description": "an endless stream of events",
        },
        **responses(
            (
                404,
                "neither a configured market nor one with stored ticks",
                "kraken:ETH-USD is neither a configured market nor has stored ticks; add it "
                "to TICKCAST_MARKETS or import ticks",
            ),
            (422, f"a bad market name, or a backlog outside 0..{MAX_BACKLOG}"),
            (
                503,
                "TICKCAST_STREAM_MAX_CLIENTS streams are open or joining, or the "
                "service is shutting down; see Retry-After",
                "100 streams are open, the most this service allows "
                "(TICKCAST_STREAM_MAX_CLIENTS); retry later",
            ),
            500,
        ),
    },
)
async def stream(
    market: Annotated[Market, Depends(_streamable)],
    feeds: FeedsDep,
    backlog: int = Query(
        300,
        ge=0,
        le=MAX_BACKLOG,
        description=f"recent ticks sent first, at most {MAX_BACKLOG} (what a feed keeps)",
    ),
    last_event_id: str | None = Header(
        None, max_length=100, description="sent by a reconnecting EventSource: resume after it"
    ),
) -> StreamingResponse:
    """Each new tick of the market, scored by the active model, as it is stored.

    Events: `reset` first (data: exchange, symbol), unless a reconnect resumes where it
    left off: drop what you had, the ticks that follow begin the series. Then `tick` for
    each tick, oldest first, the recent `backlog` ones and then each new one (id: the
    tick's place in the market; data: time, price, amount, probability, decision,
    threshold, model_id, calibrator_version, model_age_s, train_start, train_end, and the
    market's data_age_s and ingestion_lag_s at the update that brought the tick;
    probability is null while no model is loaded). Comments keep
    an idle connection open. The stream ends when the client falls far behind or the
    service shuts down; an EventSource reconnects and resumes by itself.
    """
    if backlog > feeds.ring:  # a service built with less memory than the documented maximum
        raise invalid(
            ("query", "backlog"),
            f"backlog {backlog} is more than the {feeds.ring} recent ticks a stream keeps; ask for fewer",
            "less_than_equal",
        )
    # No await from here to the response: the seat is taken (or refused: FeedsClosed,
    # TooManyClients, a 503) and handed to the response that alone gives it back, so a stream is
    # counted from its admission, before its 200.
    seat = feeds.reserve()
    return _SeatedStream(
        _events(feeds, seat, market, backlog, last_event_id),
        seat,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
