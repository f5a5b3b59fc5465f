"""Live feeds: each new tick of a market with its rise probability, pushed to subscribers.

One `MarketFeed` per market that has listeners, shared by all of them: ten open
dashboards cost one store read and one batched forward pass per update, not ten.
A feed looks for ticks past the last (time, seq) it saw when told that a pull
stored some (`Feeds.notify`) and every `poll_s` otherwise (CSV imports, another
process writing the store). It keeps its last `ring` events, so a new subscriber
gets recent history at once and a reconnecting one (SSE's Last-Event-ID) gets
exactly what it missed. A client that falls `queue_max` events behind is let go;
its EventSource reconnects and resumes from the ring. The feed stops with its
last subscriber.

The client limit counts seats, not subscribers: a seat is taken synchronously
when a stream is admitted (before its 200 and before any await) and given
back exactly once, however the stream ends. A burst of connects on a feed
that is still priming therefore cannot overshoot the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from app.market.storage import Position, TickStorage
from app.market.ticks import TickArrays
from app.ml import features
from app.services.predictor import Freshness, NoModel, Prediction, Predictor, prediction_json
from app.services.registry import RegistryError

log = logging.getLogger(__name__)

EVENT_CONTEXT_FACTOR = 16
CONTEXT = 512  # ticks kept before the newest, enough for any model up to seq_len 511


@dataclass(frozen=True)
class TickEvent:
    position: Position
    price: float
    amount: float
    prediction: Prediction | None  # None: no model yet, or too few ticks before this one
    freshness: Freshness  # the market's, at the update that brought this tick

    @property
    def time(self) -> float:
        return self.position[0]

    @property
    def id(self) -> str:
        """The SSE event id: the tick's place in its market, which a reconnect resumes after."""
        return f"{self.position[0]!r}_{self.position[1]}"

    def payload(self) -> dict[str, object]:
        tick: dict[str, object] = {"time": self.time, "price": self.price, "amount": self.amount}
        return tick | prediction_json(self.prediction, as_of=False, freshness=self.freshness)

    @cached_property
    def json(self) -> str:
        """The payload as JSON, encoded once however many clients receive it."""
        return json.dumps(self.payload(), separators=(",", ":"))


def parse_event_id(value: str | None) -> Position | None:
    """A Last-Event-ID back into a position; None for anything this service did not send."""
    if not value:
        return None
    t, sep, s = value.partition("_")
    try:
        return (float(t), int(s)) if sep else None
    except ValueError:
        return None


class TooManyClients(Exception):
    """`limit` streams are admitted already, the most the service allows."""

    retry_after_s = 30  # the refusal's Retry-After

    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} streams are open, the most this service allows; retry later")
        self.limit = limit


class FeedsClosed(Exception):
    """The service is shutting down."""

    retry_after_s = 5  # the refusal's Retry-After: a stream may reconnect to the next start


class Seat:
    """One admitted stream's place under the client limit, from admission until it ends."""

    def __init__(self, on_release: Callable[[], None]) -> None:
        self._on_release: Callable[[], None] | None = on_release

    @property
    def held(self) -> bool:
        return self._on_release is not None

    def release(self) -> None:
        """Give the place back; later calls do nothing, so every exit path may call it."""
        on_release, self._on_release = self._on_release, None
        if on_release is not None:
            on_release()


class Subscription:
    """One client's view of a feed: what it gets first, then the live events, in order."""

    def __init__(
        self,
        feed: MarketFeed,
        first: list[TickEvent],
        resumed: bool,
        queue_max: int,
        seat: Seat | None = None,
    ) -> None:
        self.feed = feed
        self.seat = seat
        self.first = first  # backlog, or what a reconnecting client missed
        self.resumed = resumed  # False: `first` starts the series afresh
        self.queue_max = queue_max
        self.ended = False
        self._events: deque[TickEvent] = deque()
        self._ready = asyncio.Event()

    def put(self, event: TickEvent) -> None:
        if self.ended:
            return
        if len(self._events) >= self.queue_max:
            # Everything it has is gapless up to its last event id, so it can resume there.
            log.info(
                "stream %s:%s: a client fell %d events behind; letting it reconnect",
                self.feed.exchange,
                self.feed.symbol,
                self.queue_max,
            )
            self.end()
            return
        self._events.append(event)
        self._ready.set()

    def end(self) -> None:
        """`next()` answers None once what is queued has been read."""
        self.ended = True
        self._ready.set()

    async def next(self) -> TickEvent | None:
        """The next live event; None when the stream should end."""
        while not self._events:
            if self.ended:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._events.popleft()

    async def drain(self) -> list[TickEvent] | None:
        """Every live event queued so far (waiting for one); None when the stream should end.

        A client takes what one update brought in one go: one write per update, not per tick.
        """
        first = await self.next()
        if first is None:
            return None
        out = [first, *self._events]
        self._events.clear()
        return out


# how long a market's newest pulled tick took to be stored (None: not ingested here)
Lag = Callable[[str, str], float | None]


class MarketFeed:
    """One market's feed, with the store, predictor and settings of the `Feeds` it belongs to."""

    def __init__(self, feeds: Feeds, exchange: str, symbol: str) -> None:
        self.store, self.predictor, self.ingestion_lag = feeds.store, feeds.predictor, feeds.ingestion_lag
        self.exchange, self.symbol = exchange, symbol
        self.poll_s = feeds.poll_s
        self.subscribers: set[Subscription] = set()
        self.ring: deque[TickEvent] = deque(maxlen=feeds.ring)
        self.primed = asyncio.Event()
        self._wake = asyncio.Event()
        self._position: Position | None = None
        self._tail = TickArrays.empty()
        self._task: asyncio.Task[None] | None = None
        self.joining = 0  # clients waiting for the first read

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"feed:{self.exchange}:{self.symbol}"
        )

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.primed.set()  # clients still waiting for the first read wake and see why it ended
        for sub in list(self.subscribers):
            sub.end()

    def notify(self) -> None:
        self._wake.set()

    def subscribe(
        self, backlog: int, last_seen: Position | None, queue_max: int, seat: Seat | None = None
    ) -> Subscription:
        """Snapshot the ring and join, with no await in between: nothing is missed or doubled."""
        resumed = last_seen is not None and bool(self.ring) and self.ring[0].position <= last_seen
        if resumed:
            first = [e for e in self.ring if e.position > last_seen]  # type: ignore[operator]
        else:
            first = list(self.ring)[max(0, len(self.ring) - backlog) :]
        sub = Subscription(self, first, resumed, queue_max, seat)
        self.subscribers.add(sub)
        return sub

    async def _run(self) -> None:
        try:
            await self._update()
        except Exception:
            log.exception("stream %s:%s: could not read the recent ticks", self.exchange, self.symbol)
        self.primed.set()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            self._wake.clear()
            try:
                await self._update()
            except Exception:
                log.exception("stream %s:%s: update failed", self.exchange, self.symbol)

    async def _update(self) -> None:
        model = self.predictor.model
        keep = CONTEXT if model is None else max(CONTEXT, _context(model.spec) - 1)
        ring = self.ring.maxlen or 0
        new, seqs = self.store.after(self.exchange, self.symbol, self._position, ring + keep)
        if len(new) == 0:
            return
        lag = None if self.ingestion_lag is None else self.ingestion_lag(self.exchange, self.symbol)
        fresh = Freshness(time.time() - float(new.time[-1]), lag)  # `new` ends at the newest stored tick
        n = min(len(new), ring)
        # Up to `ring` new ticks continue the kept tail; a longer run (the first read, a
        # backfill) brings its own context, and only its newest `ring` ticks become events.
        ticks = TickArrays.concat([self._tail, new]) if len(new) <= ring else new
        events = await self._score(ticks, seqs[len(seqs) - n :], n, fresh)
        self._position = events[-1].position
        self._tail = ticks[max(0, len(ticks) - keep) :]
        self.ring.extend(events)
        for sub in list(self.subscribers):
            for e in events:
                sub.put(e)

    async def _score(self, ticks: TickArrays, seqs: np.ndarray, n: int, fresh: Freshness) -> list[TickEvent]:
        """Events for the last n ticks, each scored on the window of ticks that ends at it."""
        start = len(ticks) - n
        preds: list[Prediction | None] = [None] * n
        model = self.predictor.model
        if model is not None:
            first = max(start, model.spec.first_full(ticks))  # the first tick with a full window before it
            try:
                scored = await self.predictor.predict_each(ticks, first, model.id)
            except (NoModel, ValueError, RegistryError) as e:  # swapped or deleted meanwhile
                log.info("stream %s:%s: not scored: %s", self.exchange, self.symbol, e)
                scored = []
            for k, p in enumerate(scored):
                preds[first - start + k] = p
        t, price, amount = ticks.time.tolist(), ticks.price.tolist(), ticks.amount.tolist()
        return [
            TickEvent((t[start + k], int(seqs[k])), price[start + k], amount[start + k], p, fresh)
            for k, p in enumerate(preds)
        ]


class Feeds:
    """The feeds of all markets, created on a market's first subscriber and stopped with its last."""

    def __init__(
        self,
        store: TickStorage,
        predictor: Predictor,
        *,
        poll_s: float = 1.0,
        ring: int = 1000,
        max_clients: int = 100,
        queue_max: int = 1024,
        ingestion_lag: Lag | None = None,  # sent with each update's events
    ) -> None:
        self.store, self.predictor, self.ingestion_lag = store, predictor, ingestion_lag
        self.poll_s, self.ring, self.max_clients, self.queue_max = poll_s, ring, max_clients, queue_max
        self.feeds: dict[tuple[str, str], MarketFeed] = {}
        self.closed = False
        self._seats = 0  # admitted streams, joining or subscribed: taken by reserve, freed by Seat

    @property
    def clients(self) -> int:
        """Streams admitted and not yet ended, including those still waiting for their feed."""
        return self._seats

    def admit(self) -> None:
        """Raise FeedsClosed or TooManyClients if a new stream would be refused now."""
        if self.closed:
            raise FeedsClosed("the service is shutting down; reconnect in a moment")
        if self._seats >= self.max_clients:
            raise TooManyClients(self.max_clients)

    def reserve(self) -> Seat:
        """Admit one stream now or raise as `admit` does. Synchronous on purpose: the check and
        the count change together, so concurrent connects cannot all pass the same check."""
        self.admit()
        self._seats += 1
        return Seat(self._free_seat)

    def _free_seat(self) -> None:
        self._seats -= 1

    async def subscribe(
        self,
        exchange: str,
        symbol: str,
        *,
        backlog: int,
        last_event_id: str | None = None,
        seat: Seat | None = None,
    ) -> Subscription:
        """Join a market's feed, starting it if needed. Takes a seat first unless given one;
        on any failure (refused, shut down, the client gone while the feed primes) the seat
        is released before this raises."""
        seat = seat if seat is not None else self.reserve()
        feed: MarketFeed | None = None
        try:
            if self.closed:
                raise FeedsClosed("the service is shutting down; reconnect in a moment")
            key = (exchange, symbol)
            feed = self.feeds.get(key)
            if feed is None:
                feed = self.feeds[key] = MarketFeed(self, exchange, symbol)
                feed.start()
            feed.joining += 1
            try:
                await feed.primed.wait()
            finally:
                feed.joining -= 1
            if self.closed:
                raise FeedsClosed("the service is shutting down; reconnect in a moment")
            return feed.subscribe(backlog, parse_event_id(last_event_id), self.queue_max, seat)
        except BaseException:
            seat.release()
            if feed is not None:
                self._drop_if_idle(feed)
            raise

    def unsubscribe(self, sub: Subscription) -> None:
        sub.feed.subscribers.discard(sub)
        if sub.seat is not None:
            sub.seat.release()
        self._drop_if_idle(sub.feed)

    def _drop_if_idle(self, feed: MarketFeed) -> None:
        key = (feed.exchange, feed.symbol)
        if not feed.subscribers and not feed.joining and self.feeds.get(key) is feed:
            del self.feeds[key]
            feed.stop()

    def notify(self, exchange: str, symbol: str) -> None:
        """New ticks were stored for this market: look now rather than at the next poll."""
        feed = self.feeds.get((exchange, symbol))
        if feed is not None:
            feed.notify()

    def notify_all(self) -> None:
        """Another replica's notifications may have been missed (a reconnect): every feed looks now."""
        for feed in list(self.feeds.values()):
            feed.notify()

    def close(self) -> None:
        """End every stream (their clients see the end and may reconnect elsewhere)."""
        self.closed = True
        feeds, self.feeds = list(self.feeds.values()), {}
        for feed in feeds:
            feed.stop()


def _context(spec: features.WindowSpec) -> int:
    """Ticks a stream keeps before the new ones: one window, or for an event model (whose
    windows count distinct timestamps) enough for one at many fills per order."""
    return spec.min_ticks * (1 if spec.target == "tick" else EVENT_CONTEXT_FACTOR)
