"""The ingest worker, killed for real: the death is noticed, recorded, counted and repaired, a
manual pull meanwhile answers 503 with Retry-After, nothing stored is lost, and the worker
never outlives the API process."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from app.main import create_app
from app.market.markets import Market as MarketName
from app.market.store import TickStore
from app.services.ingestion.pool import WorkerDown
from app.services.ingestion.scheduler import Ingestor
from tests.helpers.apps import make_settings, settings_for
from tests.helpers.binance import BinanceFake as Market
from tests.helpers.binance import recent_trades
from tests.helpers.fake_exchange import FakeExchange, hang
from tests.helpers.servers import answers, free_port, wait_for

PULL = "/markets/binance/BTC-USD/pull"


def proc_state(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) from /proc, or None once the process is reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
    return state, int(ppid)


def running(pid: int) -> bool:
    """Alive: a zombie is dead, it only waits for its parent to read its exit status."""
    st = proc_state(pid)
    return st is not None and st[0] != "Z"


def children(parent: int) -> dict[int, str]:
    """The running children of `parent`: pid -> command line."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        st = proc_state(int(d.name))
        if st is None or st[1] != parent or st[0] == "Z":
            continue
        try:
            out[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
    return out


def kill_worker(pid: int | None) -> int:
    """SIGKILL this test process's ingest worker, as the OOM killer would, and wait until it is dead."""
    assert pid is not None and pid in children(os.getpid()), "the ingest worker is not running"
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not running(pid), timeout=10)
    return pid


def restarts(c: TestClient, kind: str) -> float:
    prefix = f'tickcast_worker_restarts_total{{kind="{kind}"}} '
    lines = [ln for ln in c.get("/metrics").text.splitlines() if ln.startswith(prefix)]
    assert len(lines) == 1, f"no {prefix.strip()} in /metrics"
    return float(lines[0].split()[-1])


def assert_retry_later(r: Response) -> int:
    """A 503 that says why and when to retry, with the same number in Retry-After."""
    assert r.status_code == 503, r.text
    after = int(r.headers["retry-after"])
    assert after >= 1 and r.json()["detail"].endswith(f"retry in {after} s")
    return after


def pull_until_ok(c: TestClient, timeout: float = 60) -> Response:
    """What a client does with a 503: wait as told, then pull again."""
    deadline = time.monotonic() + timeout
    while True:
        r = c.post(PULL)
        if r.status_code == 200:
            return r
        after = assert_retry_later(r)
        assert time.monotonic() < deadline, r.text
        time.sleep(min(after, 0.2))


def test_an_idle_worker_killed_is_noticed_recorded_counted_and_replaced(tmp_path: Path) -> None:
    trades = recent_trades(90)
    market = Market(trades[:60])
    with FakeExchange(market) as fx:
        # ingestion off: no pull runs, so only the watch can notice the death
        with TestClient(create_app(settings_for(tmp_path, fx.url, ingest=False))) as c:
            assert c.post(PULL).json()["new_ticks"] == 60
            assert restarts(c, "ingest") == 0 and restarts(c, "job") == 0
            pid = kill_worker(c.app.state.services.ingestor.worker.pid)
            wait_for(lambda: c.get("/markets").json()[0]["last_error"] is not None, timeout=10)
            m = c.get("/markets").json()[0]
            assert f"pid {pid}" in m["last_error"] and "killed by SIGKILL" in m["last_error"]
            assert "out of memory?" in m["last_error"] and m["worker_restarts"] == 1
            assert restarts(c, "ingest") == 1 and restarts(c, "job") == 0
            market.trades = trades
            assert pull_until_ok(c).json()["new_ticks"] == 30
            m = c.get("/markets").json()[0]
            assert m["last_error"] is None and m["ticks_stored"] == 90 and m["consecutive_failures"] == 0
            assert restarts(c, "ingest") == 1  # the replacement did not die
            new = c.app.state.services.ingestor.worker.pid
            assert new is not None and new != pid and new in children(os.getpid())


def test_a_pull_whose_worker_dies_answers_503_and_loses_nothing(tmp_path: Path) -> None:
    trades = recent_trades(90)
    market = Market(trades[:60])
    with FakeExchange(market) as fx:
        with TestClient(create_app(settings_for(tmp_path, fx.url, ingest=False))) as c:
            store = c.app.state.services.store
            assert c.post(PULL).json()["new_ticks"] == 60
            market.trades = trades
            fx.inject(hang(30))  # the next page hangs: the pull is in flight when the worker dies
            n = len(fx.requests)
            answers: list[Response] = []
            t = threading.Thread(target=lambda: answers.append(c.post(PULL)))
            t.start()
            wait_for(lambda: len(fx.requests) > n)
            pid = kill_worker(c.app.state.services.ingestor.worker.pid)
            t.join(20)
            assert len(answers) == 1
            assert_retry_later(answers[0])
            detail = answers[0].json()["detail"]
            assert f"pid {pid}" in detail and "killed by SIGKILL" in detail
            m = c.get("/markets").json()[0]
            assert "killed by SIGKILL" in m["last_error"] and m["failures"] == 1
            assert m["ticks_stored"] == 60 and m["cursor"] == str(trades[59]["a"])
            r = pull_until_ok(c)
            assert r.json()["new_ticks"] == 30  # resumed from the cursor: nothing lost, nothing twice
            ids = [str(x) for x in store.read("binance", "BTC-USD").trade_id]
            assert ids == [str(t["a"]) for t in trades]


def test_scheduled_ingestion_goes_on_after_the_worker_is_killed(tmp_path: Path) -> None:
    trades = recent_trades(90)
    market = Market(trades[:60])
    with FakeExchange(market) as fx:
        with TestClient(create_app(settings_for(tmp_path, fx.url, pull_interval_s=0.3))) as c:
            store = c.app.state.services.store
            wait_for(lambda: store.count("binance", "BTC-USD") == 60)
            kill_worker(c.app.state.services.ingestor.worker.pid)
            wait_for(lambda: restarts(c, "ingest") == 1, timeout=10)
            market.trades = trades
            wait_for(lambda: store.count("binance", "BTC-USD") == 90, timeout=60)
            wait_for(lambda: c.get("/markets").json()[0]["last_error"] is None)
            m = c.get("/markets").json()[0]
            assert m["consecutive_failures"] == 0 and m["worker_restarts"] == 1


def test_a_manual_pull_while_the_worker_restarts_is_refused_with_when_to_retry(tmp_path: Path) -> None:
    """Straight on the Ingestor, no scheduler: the pull right after the death is the one that
    notices it, so the outage is certain, and so is a back-off after deaths in a row."""

    async def scenario() -> None:
        store = TickStore(tmp_path / "tickcast.db")
        ing = Ingestor(
            store,
            [MarketName("synthetic", "BTC-USD")],
            source_urls={},
            interval_s=10,
            enabled=False,
            synthetic_history_s=120,
        )
        try:
            assert (await ing.pull_now("synthetic", "BTC-USD")).new_ticks > 0
            pid = kill_worker(ing.worker.pid)
            with pytest.raises(WorkerDown) as e:
                await ing.pull_now("synthetic", "BTC-USD")
            assert e.value.retry_after_s >= 1 and f"pid {pid}" in str(e.value)
            assert str(e.value).endswith(f"a new worker is starting; retry in {e.value.retry_after_s} s")
            st = ing.market("synthetic", "BTC-USD")
            assert "killed by SIGKILL" in (st.last_error or "") and st.consecutive_failures == 1
            assert ing.worker_restarts == 1

            # the replacement dies too, before any pull worked: the next start waits a little
            deadline = time.monotonic() + 30
            while ing.worker.unavailable() is not None:  # until the replacement has started
                assert time.monotonic() < deadline, "the replacement did not start"
                await asyncio.sleep(0.05)
            kill_worker(ing.worker.pid)
            with pytest.raises(WorkerDown) as e:
                await ing.pull_now("synthetic", "BTC-USD")
            assert "2 deaths in a row, so a new worker starts in 1 s" in str(e.value)
            assert ing.worker_restarts == 2

            while True:  # what a client does: retry when told
                try:
                    await ing.pull_now("synthetic", "BTC-USD")
                    break
                except WorkerDown as down:
                    assert time.monotonic() < deadline + 30, str(down)
                    await asyncio.sleep(min(down.retry_after_s, 0.2))
            assert st.last_error is None and st.consecutive_failures == 0 and st.failures >= 2
            assert ing.worker_restarts == 2
        finally:
            await ing.stop()
            store.close()

    asyncio.run(scenario())


def test_a_locked_store_answers_503_not_500_and_loses_nothing(tmp_path: Path) -> None:
    trades = recent_trades(90)
    market = Market(trades[:60])
    with FakeExchange(market) as fx:
        settings = settings_for(tmp_path, fx.url, ingest=False)
        with TestClient(create_app(settings)) as c:
            assert c.post(PULL).json()["new_ticks"] == 60
            market.trades = trades
            other = sqlite3.connect(settings.store_path, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")  # another writer holds the store's write lock
                r = c.post(PULL)
                assert assert_retry_later(r) == 10
                assert "database is locked" in r.json()["detail"]
                m = c.get("/markets").json()[0]
                assert "database is locked" in m["last_error"] and m["ticks_stored"] == 60
            finally:
                other.execute("ROLLBACK")
                other.close()
            assert c.post(PULL).json()["new_ticks"] == 30
            assert restarts(c, "ingest") == 0  # a store error is not a worker death


def test_the_worker_and_the_resource_tracker_die_with_the_api_process(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "TICKCAST_PORT": str(port),
        "TICKCAST_STORE_PATH": str(tmp_path / "db" / "tickcast.db"),
        "TICKCAST_MODELS_DIR": str(tmp_path / "models"),
        "TICKCAST_BOOTSTRAP": "false",
        "TICKCAST_INGEST": "true",
        "TICKCAST_MARKETS": '["synthetic:BTC-USD"]',
        "TICKCAST_PULL_INTERVAL_S": "0.5",
        "TICKCAST_LOG_LEVEL": "warning",
    }
    api = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}"), timeout=60)

        def kids(what: str) -> list[int]:
            return [pid for pid, cmd in children(api.pid).items() if what in cmd]

        wait_for(lambda: kids("spawn_main") and kids("resource_tracker"), timeout=60)
        orphans = kids("spawn_main") + kids("resource_tracker")
        api.kill()
        api.wait(10)
        # generous for a loaded CI machine; the lifeline's target is 2 s
        wait_for(lambda: not any(running(pid) for pid in orphans), timeout=10)
    finally:
        if api.poll() is None:
            api.kill()
            api.wait()


def test_a_market_without_a_source_is_refused_before_the_start(tmp_path: Path) -> None:
    """Issue 11: it used to start and log a warning every pull, forever; tests/test_settings.py
    checks the one-line error `tickcast serve` prints for it."""
    with pytest.raises(ValueError, match=r"unknown exchange 'nowhere'; known: binance, .*synthetic"):
        make_settings(tmp_path, markets=["nowhere:BTC-USD"])
