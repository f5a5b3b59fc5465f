"""The markets' ingestion locks and the "ticks stored" broadcast, on the real PostgreSQL with raw
connections: which replica holds what, what a dead or disconnected holder leaves, and a
notification reaching another replica's hooks on its event loop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from app.market.markets import Market
from app.services.ingestion.broadcast import TickBroadcast
from app.services.ingestion.leader import MarketLeases
from app.services.ingestion.replicas import for_target
from tests.helpers.apps import make_settings

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
A, B, C = ("binance", "BTC-USD"), ("kraken", "ETH-USD"), ("bitstamp", "BTC-USD")


@pytest.fixture
def leases(pg_url: str) -> Iterator[list[MarketLeases]]:
    """Replicas' lock sets, made by the test and all closed at its end."""
    made: list[MarketLeases] = []
    yield made
    for lease in made:
        lease.close()


def replica(made: list[MarketLeases], url: str, markets: list[tuple[str, str]], **kw: float) -> MarketLeases:
    lease = MarketLeases(url, markets, **kw)  # type: ignore[arg-type]
    made.append(lease)
    return lease


def takes(lease: MarketLeases, timeout: float = 5.0) -> frozenset[tuple[str, str]]:
    """What `lease` gains at its first round that gains anything: a released lock is free once
    the server has ended the old session, a moment after the client let go."""
    deadline = time.monotonic() + timeout
    while not (gained := lease.refresh().gained):
        assert time.monotonic() < deadline, "nothing was released"
        time.sleep(0.02)
    return gained


def terminate(url: str, application: str) -> int:
    """End the server side of the connections named `application`% (what a lost network does),
    waiting until they are gone."""
    with psycopg.connect(url, autocommit=True) as c:
        rows = c.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE %s AND pid <> pg_backend_pid()",
            (f"{application}%",),
        ).fetchall()
    return len(rows)


def test_one_replica_holds_each_market_and_a_closed_one_hands_them_over(pg_url: str, leases) -> None:
    first = replica(leases, pg_url, [A, B])
    second = replica(leases, pg_url, [A, B])
    got = first.refresh()
    assert got.gained == {A, B} and not got.lost and first.held == {A, B}
    assert second.refresh().gained == frozenset() and second.held == frozenset()
    assert first.refresh().gained == frozenset() and first.held == {A, B}  # held stays held
    assert first.holds(*A) and not second.holds(*A)

    first.close()  # a replica stopping lets its markets go at once
    assert first.held == frozenset()
    assert takes(second) == {A, B}
    assert first.refresh().gained == frozenset()


def test_a_limit_spreads_the_markets_over_replicas(pg_url: str, leases) -> None:
    one, two, three = (replica(leases, pg_url, [A, B, C], max_markets=1) for _ in range(3))
    assert one.refresh().gained == {A}
    assert two.refresh().gained == {B}  # A is taken: the next free one
    assert three.refresh().gained == {C}
    assert one.refresh().gained == frozenset() and one.held == {A}  # at its limit: tries nothing more
    two.close()
    unlimited = replica(leases, pg_url, [A, B, C])
    assert takes(unlimited) == {B}


def test_a_lost_lock_connection_drops_every_market_and_another_replica_takes_them(
    pg_url: str, leases
) -> None:
    first = replica(leases, pg_url, [A, B])
    second = replica(leases, pg_url, [A, B])
    first.refresh()
    assert terminate(pg_url, f"tickcast-ingest-lock-{os.getpid()}") >= 1  # the one connected so far
    assert takes(second) == {A, B}  # the server released the dead session's locks

    lost = first.refresh()
    assert lost.lost == {A, B} and first.held == frozenset() and not first.holds(*A)
    assert first.last_error is not None and "lock connection failed" in first.last_error
    # the next round reconnects; the markets are the other replica's now
    assert first.refresh().gained == frozenset() and first.last_error is None
    second.close()
    assert takes(first) == {A, B}


def test_a_killed_holder_process_releases_its_markets(pg_url: str, leases) -> None:
    code = (
        "import sys, time\n"
        "from app.services.ingestion.leader import MarketLeases\n"
        "lease = MarketLeases(sys.argv[1], [('binance', 'BTC-USD')])\n"
        "print(sorted(lease.refresh().gained), flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, pg_url], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "[('binance', 'BTC-USD')]"
        other = replica(leases, pg_url, [A])
        assert other.refresh().gained == frozenset()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert takes(other) == {A}  # the server sees the socket close and ends the session
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_round_too_old_to_trust_holds_nothing(pg_url: str, leases) -> None:
    lease = replica(leases, pg_url, [A], valid_s=0.3)
    lease.refresh()
    assert lease.holds(*A)
    time.sleep(0.4)  # no round since: the database may have stopped answering
    assert not lease.holds(*A) and lease.held == frozenset()
    lease.refresh()
    assert lease.holds(*A)


def test_an_unreachable_database_holds_nothing_and_says_why(leases) -> None:
    lease = replica(leases, "postgresql://postgres@127.0.0.1:1/none", [A])
    assert lease.refresh().gained == frozenset() and lease.held == frozenset()
    assert lease.last_error is not None and "127.0.0.1:1" in lease.last_error


async def _until(pred: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


class Ears:
    """One replica's broadcast and what its hooks heard (on which loop)."""

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop) -> None:
        self.heard: list[tuple[str, str]] = []
        self.resyncs = 0
        self.off_loop = 0

        def on_ticks(exchange: str, symbol: str) -> None:
            self.off_loop += asyncio.get_running_loop() is not loop
            self.heard.append((exchange, symbol))

        def on_resync() -> None:
            self.resyncs += 1

        self.broadcast = TickBroadcast(url, on_ticks=on_ticks, on_resync=on_resync)


def test_stored_ticks_reach_the_other_replicas_hooks_on_their_loop_and_not_their_own(pg_url: str) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        leader, other = Ears(pg_url, loop), Ears(pg_url, loop)
        for ears in (leader, other):
            ears.broadcast.start()
        try:
            for ears in (leader, other):
                assert await asyncio.to_thread(ears.broadcast.ready.wait, 10)
            t0 = time.monotonic()
            leader.broadcast.publish(*A)  # its pull stored ticks of A
            await _until(lambda: other.heard)
            assert other.heard == [A] and time.monotonic() - t0 < 1.0
            other.broadcast.publish(*A)  # an import of A on the other replica: the leader hears of it
            other.broadcast.publish(*B)
            await _until(lambda: len(leader.heard) == 2)
            await asyncio.sleep(0.3)  # and nobody hears its own
            assert leader.heard == [A, B] and other.heard == [A]
            assert leader.off_loop == other.off_loop == 0

            # the listeners' connections are lost: after the reconnect each looks at every market
            assert terminate(pg_url, f"tickcast-broadcast-listen-{os.getpid()}") >= 2
            await _until(lambda: leader.resyncs and other.resyncs, timeout=10)
            leader.broadcast.publish(*C)  # and they hear each other again, not themselves
            await _until(lambda: len(other.heard) == 2, timeout=10)
            await asyncio.sleep(0.3)
            assert other.heard == [A, C] and leader.heard == [A, B]
        finally:
            for ears in (leader, other):
                await ears.broadcast.stop()
        leader.broadcast.publish(*B)  # after stop: dropped, no error

    asyncio.run(run())


def test_a_send_after_the_server_dropped_the_connection_goes_on_a_new_one(pg_url: str) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        sender, listener = Ears(pg_url, loop), Ears(pg_url, loop)
        listener.broadcast.start()
        try:
            assert await asyncio.to_thread(listener.broadcast.ready.wait, 10)
            sender.broadcast.publish(*A)  # never started: it sends, and hears nothing
            await _until(lambda: listener.heard)
            assert terminate(pg_url, f"tickcast-broadcast-send-{os.getpid()}") >= 1
            sender.broadcast.publish(*B)
            await _until(lambda: len(listener.heard) == 2)
            assert listener.heard == [A, B]
        finally:
            await sender.broadcast.stop()
            await listener.broadcast.stop()

    asyncio.run(run())


def test_the_replica_parts_exist_for_postgresql_only_and_locks_only_where_ingestion_runs(
    pg_url: str, tmp_path: Path
) -> None:
    hooks: list[tuple[str, str]] = []
    markets = [Market("binance", "BTC-USD"), Market("kraken", "ETH-USD"), Market("binance", "BTC-USD")]
    settings = make_settings(tmp_path, ingest=True, markets=markets, ingest_max_markets=1, pull_interval_s=5)

    embedded = for_target(str(tmp_path / "t.db"), settings, lambda e, s: hooks.append((e, s)), ())
    assert embedded.leases is None and embedded.broadcast is None
    embedded.on_stored(*A)  # the local hooks alone
    assert hooks == [A]

    shared = for_target(pg_url, settings, lambda e, s: hooks.append((e, s)), ())
    assert shared.broadcast is not None and shared.leases is not None
    assert shared.leases.markets == [A, B] and shared.leases.max_markets == 1
    assert shared.leases.valid_s == 15.0  # three pull intervals
    shared.on_stored(*B)  # the local hooks, then the others are told (not started: nothing heard)
    assert hooks == [A, B]
    shared.broadcast.close()

    watching = for_target(pg_url, make_settings(tmp_path, ingest=False), lambda e, s: None, ())
    assert watching.leases is None and watching.broadcast is not None  # it hears, it never leads
    watching.broadcast.close()
