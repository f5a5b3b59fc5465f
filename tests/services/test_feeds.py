"""Live feeds over a real store and predictor: what is new, once, in order, scored as /predict."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import torch

from app.market.sources import synthetic
from app.market.store import TickStore
from app.market.ticks import TickArrays
from app.ml import training
from app.services.feeds import Feeds, FeedsClosed, Subscription, TickEvent, TooManyClients
from app.services.predictor import Predictor
from app.services.registry import Registry

EX, SYM = "test", "AAA"


@pytest.fixture(scope="module")
def ticks() -> TickArrays:
    return synthetic.generate(3000, seed=11)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, ticks: TickArrays) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("models")
    res = training.fit(
        ticks, training.TrainConfig(hidden_size=8, num_layers=1, num_epochs=1, seq_len=16, device="cpu")
    )
    res.save(folder)
    Registry(folder).activate(res.model.id)
    torch.set_num_threads(before)
    return folder


def run(
    tmp_path: Path,
    model_dir: Path | None,
    body: Callable[[TickStore, Predictor, Feeds], Awaitable[None]],
    **kw: object,
) -> None:
    async def main() -> None:
        registry = Registry(model_dir if model_dir is not None else tmp_path / "none")
        predictor = Predictor(registry, "cpu", threads=1)
        predictor.load_active()
        await predictor.start()
        with TickStore(tmp_path / "t.db") as store:
            feeds = Feeds(store, predictor, **{"poll_s": 0.05, **kw})  # type: ignore[arg-type]
            try:
                await body(store, predictor, feeds)
            finally:
                feeds.close()
                await predictor.stop()

    asyncio.run(main())


async def take(sub: Subscription, n: int) -> list[TickEvent]:
    out = []
    for _ in range(n):
        e = await asyncio.wait_for(sub.next(), 10)
        assert e is not None
        out.append(e)
    return out


def times(events: list[TickEvent]) -> list[float]:
    return [e.time for e in events]


def test_backlog_then_new_ticks_once_each_scored_as_predict(
    tmp_path: Path, model_dir: Path, ticks: TickArrays
) -> None:
    async def body(store: TickStore, predictor: Predictor, feeds: Feeds) -> None:
        store.insert(EX, SYM, ticks[:1000])
        sub = await feeds.subscribe(EX, SYM, backlog=4)
        assert not sub.resumed and times(sub.first) == ticks.time[996:1000].tolist()
        store.insert(EX, SYM, ticks[1000:1005])
        feeds.notify(EX, SYM)
        new = await take(sub, 5)
        assert times(new) == ticks.time[1000:1005].tolist()
        for k, e in enumerate(sub.first + new):
            want = await predictor.predict(ticks[: 996 + k + 1])
            assert e.prediction is not None
            assert e.prediction.probability == pytest.approx(want.probability, abs=1e-6)
            assert e.prediction.model_id == want.model_id and e.prediction.decision == want.decision
        # a backfill of older history is not news; a tick stored later at the same time is
        last = ticks[1004:1005]
        same_time = TickArrays(last.time.copy(), last.price * 1.001, last.amount.copy())
        store.insert(EX, SYM, TickArrays.concat([ticks[10:20]]))
        store.insert(EX, SYM, TickArrays.concat([same_time, ticks[1005:1006]]))
        got = await take(sub, 2)
        assert [(e.time, e.price) for e in got] == [
            (last.time[0], same_time.price[0]),
            (ticks.time[1005], ticks.price[1005]),
        ]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sub.next(), 0.3)  # and nothing else
        feeds.unsubscribe(sub)

    run(tmp_path, model_dir, body)


def test_a_long_run_of_new_ticks_sends_only_the_newest_ring(
    tmp_path: Path, model_dir: Path, ticks: TickArrays
) -> None:
    async def body(store: TickStore, predictor: Predictor, feeds: Feeds) -> None:
        store.insert(EX, SYM, ticks[:100])
        sub = await feeds.subscribe(EX, SYM, backlog=1000)
        assert times(sub.first) == ticks.time[50:100].tolist()  # the ring holds 50
        store.insert(EX, SYM, ticks[100:600])
        got = await take(sub, 50)
        assert times(got) == ticks.time[550:600].tolist()
        assert all(e.prediction is not None for e in got)  # context came with the run
        assert len(feeds.feeds[(EX, SYM)].ring) == 50

    run(tmp_path, model_dir, body, ring=50)


def test_without_a_model_ticks_flow_unscored(tmp_path: Path, ticks: TickArrays) -> None:
    async def body(store: TickStore, predictor: Predictor, feeds: Feeds) -> None:
        store.insert(EX, SYM, ticks[:30])
        sub = await feeds.subscribe(EX, SYM, backlog=30)
        assert len(sub.first) == 30
        assert {e.prediction for e in sub.first} == {None}
        unscored = (
            '"probability":null,"decision":null,"threshold":null,"model_id":null,"calibrator_version":null,'
            '"model_age_s":null,"train_start":null,"train_end":null,"data_age_s":'
        )
        assert all(unscored in e.json and e.json.endswith('"ingestion_lag_s":null}') for e in sub.first)

    run(tmp_path, None, body)


def test_a_slow_client_is_let_go_and_resumes_from_the_ring(
    tmp_path: Path, model_dir: Path, ticks: TickArrays
) -> None:
    async def body(store: TickStore, predictor: Predictor, feeds: Feeds) -> None:
        store.insert(EX, SYM, ticks[:100])
        sub = await feeds.subscribe(EX, SYM, backlog=0)
        store.insert(EX, SYM, ticks[100:110])  # 10 events for a queue of 3
        feeds.notify(EX, SYM)
        got: list[TickEvent] = []
        while (e := await asyncio.wait_for(sub.next(), 10)) is not None:
            got.append(e)
        assert sub.ended and 0 < len(got) < 10
        assert times(got) == ticks.time[100 : 100 + len(got)].tolist()
        feeds.unsubscribe(sub)
        again = await feeds.subscribe(EX, SYM, backlog=0, last_event_id=got[-1].id)
        assert again.resumed
        assert times(got + again.first) == ticks.time[100:110].tolist()

    run(tmp_path, model_dir, body, queue_max=3)


def test_feeds_stop_with_their_last_client_even_one_that_left_while_priming(
    tmp_path: Path, ticks: TickArrays
) -> None:
    async def body(store: TickStore, predictor: Predictor, feeds: Feeds) -> None:
        store.insert(EX, SYM, ticks[:100])
        a = await feeds.subscribe(EX, SYM, backlog=1)
        b = await feeds.subscribe(EX, SYM, backlog=1)
        feed = feeds.feeds[(EX, SYM)]
        assert feeds.clients == 2 and feed.running
        feeds.unsubscribe(a)
        assert feed.running
        feeds.unsubscribe(b)
        await asyncio.sleep(0.05)
        assert feeds.feeds == {} and not feed.running

        joining = asyncio.create_task(feeds.subscribe(EX, SYM, backlog=1))
        await asyncio.sleep(0)  # the feed exists and primes; its only client gives up
        feed = feeds.feeds[(EX, SYM)]
        joining.cancel()
        with pytest.raises(asyncio.CancelledError):
            await joining
        await asyncio.sleep(0.05)
        assert feeds.feeds == {} and not feed.running

    run(tmp_path, None, body)


def test_limits_and_close(tmp_path: Path, ticks: TickArrays) -> None:
    async def body(store: TickStore, predictor: Predictor, feeds: Feeds) -> None:
        store.insert(EX, SYM, ticks[:100])
        a = await feeds.subscribe(EX, SYM, backlog=0)
        # the setting's name is the HTTP answer's to add (tests/api/test_error_answers.py)
        with pytest.raises(TooManyClients, match="^1 streams are open, the most this service allows") as e:
            await feeds.subscribe(EX, "BBB", backlog=0)
        assert e.value.limit == 1
        feeds.close()
        assert await asyncio.wait_for(a.next(), 1) is None
        with pytest.raises(FeedsClosed):
            await feeds.subscribe(EX, SYM, backlog=0)

    run(tmp_path, None, body, max_clients=1)


def test_the_limit_counts_clients_still_joining_a_priming_feed(
    tmp_path: Path, model_dir: Path, ticks: TickArrays
) -> None:
    """A burst on a market with no feed yet: every subscriber waits for the same first read, and
    only `max_clients` of them may be waiting or subscribed at once."""

    async def body(store: TickStore, predictor: Predictor, feeds: Feeds) -> None:
        store.insert(EX, SYM, ticks[:2000])
        tries = [asyncio.create_task(feeds.subscribe(EX, SYM, backlog=1)) for _ in range(12)]
        got = await asyncio.gather(*tries, return_exceptions=True)
        subs = [g for g in got if isinstance(g, Subscription)]
        refused = [g for g in got if isinstance(g, TooManyClients)]
        assert (len(subs), len(refused)) == (3, 9)
        assert feeds.clients == 3
        for s in subs:
            feeds.unsubscribe(s)
            feeds.unsubscribe(s)  # a second release changes nothing
        assert feeds.clients == 0 and feeds.feeds == {}
        again = await asyncio.gather(*(feeds.subscribe(EX, SYM, backlog=1) for _ in range(3)))
        assert feeds.clients == 3 and all(len(s.first) == 1 for s in again)

    run(tmp_path, model_dir, body, max_clients=3)


def test_a_seat_is_given_back_on_every_way_out(tmp_path: Path, ticks: TickArrays) -> None:
    async def body(store: TickStore, predictor: Predictor, feeds: Feeds) -> None:
        store.insert(EX, SYM, ticks[:100])
        # taken before the stream starts, handed to subscribe, given back when it ends
        seat = feeds.reserve()
        assert feeds.clients == 1
        with pytest.raises(TooManyClients):
            feeds.reserve()
        sub = await feeds.subscribe(EX, SYM, backlog=0, seat=seat)
        assert feeds.clients == 1 and sub.seat is seat
        feeds.unsubscribe(sub)
        assert feeds.clients == 0 and not seat.held
        seat.release()
        assert feeds.clients == 0
        # the client left while the feed primed
        joining = asyncio.create_task(feeds.subscribe(EX, "CCC", backlog=0))
        await asyncio.sleep(0)
        assert feeds.clients == 1
        joining.cancel()
        with pytest.raises(asyncio.CancelledError):
            await joining
        assert feeds.clients == 0
        # the service shut down while it joined
        joining = asyncio.create_task(feeds.subscribe(EX, SYM, backlog=0))
        await asyncio.sleep(0)
        feeds.close()
        with pytest.raises(FeedsClosed):
            await joining
        assert feeds.clients == 0

    run(tmp_path, None, body, max_clients=1)
