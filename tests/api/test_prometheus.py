"""/metrics figures to alert on, through the real app: per-market ingestion against a fake Binance
on 127.0.0.1 (and a closed port), process metrics, and the run time of real training jobs."""

from __future__ import annotations

import dataclasses
import re
import sqlite3
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.api.metrics import TickCounts
from app.main import create_app
from app.market.sources import synthetic
from app.market.store import TickStore
from tests.helpers.apps import make_settings
from tests.helpers.binance import BinanceFake as Market
from tests.helpers.binance import truth
from tests.helpers.fake_exchange import FakeExchange, server_error
from tests.helpers.jobs_api import LONG, SMALL
from tests.helpers.servers import free_port, wait_for

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
BTC = {"exchange": "binance", "symbol": "BTC-USD"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(c: TestClient) -> Samples:
    r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """A sample's value, None when the series is absent."""
    return samples.get((name, frozenset(labels.items())))


def recent_trades(n: int) -> list[dict]:
    trades = truth(n)
    shift = int((time.time() - 1800) * 1000) - trades[0]["T"]
    return [{**t, "T": t["T"] + shift} for t in trades]


def test_market_figures_follow_pulls_and_failures(tmp_path: Path) -> None:
    trades = recent_trades(60)
    market = Market(trades[:30])
    with FakeExchange(market) as fx:
        settings = make_settings(tmp_path, markets=["binance:BTC-USD"], source_urls={"binance": fx.url})
        with TestClient(create_app(settings)) as c:
            store = c.app.state.services.store
            before = scrape(c)  # configured, never pulled: counters at 0, no made-up times
            assert value(before, "tickcast_market_ticks_stored", **BTC) == 0
            assert value(before, "tickcast_market_pulls_total", **BTC) == 0
            assert value(before, "tickcast_market_pull_errors_total", **BTC) == 0
            assert value(before, "tickcast_market_consecutive_pull_failures", **BTC) == 0
            for name in (
                "tickcast_market_last_tick_timestamp_seconds",
                "tickcast_market_lag_seconds",
                "tickcast_market_last_successful_pull_timestamp_seconds",
                "tickcast_market_pull_interval_seconds",
            ):  # ingestion is off: no interval
                assert value(before, name, **BTC) is None, name

            t0 = time.time()
            assert c.post("/markets/binance/BTC-USD/pull").json()["new_ticks"] == 30
            t1 = time.time()
            got = scrape(c)
            t2 = time.time()
            last = store.time_range("binance", "BTC-USD")[1]
            assert last == pytest.approx(trades[29]["T"] / 1000)
            stored = store.count("binance", "BTC-USD")
            assert value(got, "tickcast_market_ticks_stored", **BTC) == stored == 30
            assert value(got, "tickcast_market_last_tick_timestamp_seconds", **BTC) == last
            assert t1 - last <= value(got, "tickcast_market_lag_seconds", **BTC) <= t2 - last
            assert t0 <= value(got, "tickcast_market_last_successful_pull_timestamp_seconds", **BTC) <= t1
            assert value(got, "tickcast_market_pulls_total", **BTC) == 1
            success = value(got, "tickcast_market_last_successful_pull_timestamp_seconds", **BTC)

            fx.inject(*[server_error(500)] * 12)  # more than a pull's retries
            assert c.post("/markets/binance/BTC-USD/pull").status_code == 502
            failed = scrape(c)
            assert value(failed, "tickcast_market_pull_errors_total", **BTC) == 1
            assert value(failed, "tickcast_market_pulls_total", **BTC) == 2
            assert value(failed, "tickcast_market_consecutive_pull_failures", **BTC) == 1
            assert value(failed, "tickcast_market_last_successful_pull_timestamp_seconds", **BTC) == success
            assert value(failed, "tickcast_market_ticks_stored", **BTC) == 30

            fx.clear()
            market.trades = trades
            assert c.post("/markets/binance/BTC-USD/pull").json()["new_ticks"] == 30
            # a count is reused for 100x as long as it took (TickCounts): here, milliseconds
            wait_for(lambda: value(scrape(c), "tickcast_market_ticks_stored", **BTC) == 60, timeout=5)
            again = scrape(c)
            assert value(again, "tickcast_market_last_tick_timestamp_seconds", **BTC) == pytest.approx(
                trades[59]["T"] / 1000
            )
            assert value(again, "tickcast_market_consecutive_pull_failures", **BTC) == 0
            assert value(again, "tickcast_market_pulls_total", **BTC) == 3
            assert value(again, "tickcast_market_pull_errors_total", **BTC) == 1
            assert value(again, "tickcast_market_last_successful_pull_timestamp_seconds", **BTC) > success


def test_a_feed_that_never_answers_counts_errors_on_schedule(tmp_path: Path) -> None:
    """A market pointed at a closed port: errors and consecutive failures climb, there is no last
    success, and the interval the README's stale-feed alert divides by is there."""
    settings = make_settings(
        tmp_path,
        markets=["binance:BTC-USD"],
        ingest=True,
        pull_interval_s=0.3,
        source_urls={"binance": f"http://127.0.0.1:{free_port()}"},
    )
    with TestClient(create_app(settings)) as c:
        wait_for(lambda: (value(scrape(c), "tickcast_market_pull_errors_total", **BTC) or 0) >= 2, 60)
        got = scrape(c)
        errors = value(got, "tickcast_market_pull_errors_total", **BTC)
        assert value(got, "tickcast_market_pulls_total", **BTC) == errors
        assert value(got, "tickcast_market_consecutive_pull_failures", **BTC) >= 2
        assert value(got, "tickcast_market_pull_interval_seconds", **BTC) == 0.3
        assert value(got, "tickcast_market_last_successful_pull_timestamp_seconds", **BTC) is None
        assert value(got, "tickcast_market_ticks_stored", **BTC) == 0
        assert value(got, "tickcast_market_lag_seconds", **BTC) is None
        assert c.get("/markets").json()[0]["failures"] >= errors


def test_process_metrics_are_the_apps_own(tmp_path: Path) -> None:
    """prometheus-client's process, platform and GC collectors, on each app's own registry: two apps
    in one process both have them, and neither clashes with the other."""
    with (
        TestClient(create_app(make_settings(tmp_path / "a"))) as a,
        TestClient(create_app(make_settings(tmp_path / "b"))) as b,
    ):
        for c in (a, b):
            got = scrape(c)
            assert value(got, "process_resident_memory_bytes") > 10 * 2**20
            assert value(got, "process_cpu_seconds_total") > 0
            assert 0 < value(got, "process_start_time_seconds") <= time.time()
            assert value(got, "process_open_fds") >= 1
            assert value(got, "python_gc_collections_total", generation="0") is not None
            assert any(name == "python_info" for name, _ in got)


@pytest.mark.sqlite_only  # files in the models folder or beside the SQLite file, as only the default has
def test_a_store_outage_leaves_metrics_up_and_says_so(tmp_path: Path) -> None:
    """During an outage /metrics is what an on-call person reads: it still answers 200 with the
    process figures, tickcast_store_up is 0, and the store's figures keep their last values."""
    with TestClient(create_app(make_settings(tmp_path))) as c:
        c.app.state.services.store.insert("synthetic", "BTC-USD", synthetic.generate(100, seed=5))
        before = scrape(c)
        assert value(before, "tickcast_store_up") == 1
        queued = value(before, "tickcast_jobs", status="queued")
        holder = sqlite3.connect(c.app.state.services.store.path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # longer than the store's 5 s busy wait: its reads fail
        try:
            r = c.get("/metrics")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert r.status_code == 200
        during = {
            (x.name, frozenset(x.labels.items())): x.value
            for family in text_string_to_metric_families(r.text)
            for x in family.samples
        }
        assert value(during, "tickcast_store_up") == 0
        assert value(during, "process_resident_memory_bytes") > 0
        assert value(during, "tickcast_jobs", status="queued") == queued
        assert value(scrape(c), "tickcast_store_up") == 1  # and back once the store is


def test_job_durations_by_final_status(tmp_path: Path) -> None:
    """A job that ran is observed when it ends, with its run time and its wait; one cancelled before
    it started never ran and is not."""
    with TestClient(create_app(make_settings(tmp_path, job_concurrency=1))) as c:
        c.app.state.services.store.insert("synthetic", "BTC-USD", synthetic.generate(4000, seed=5))
        assert value(scrape(c), "tickcast_job_duration_seconds_count", status="failed") == 0
        job = c.post("/train", json={"config": SMALL, "activate": "never"}).json()
        done: dict = {}

        def finished() -> bool:
            done.update(c.get(f"/jobs/{job['id']}").json())
            return done["status"] not in ("queued", "running")

        wait_for(finished, timeout=90)
        assert done["status"] == "succeeded", done
        wait_for(lambda: value(scrape(c), "tickcast_job_duration_seconds_count", status="succeeded") == 1)
        got = scrape(c)
        assert value(got, "tickcast_job_duration_seconds_sum", status="succeeded") == pytest.approx(
            done["finished_at"] - done["started_at"]
        )
        assert value(got, "tickcast_job_queue_wait_seconds_count") == 1
        assert value(got, "tickcast_job_queue_wait_seconds_sum") == pytest.approx(
            done["started_at"] - done["created_at"]
        )

        running = c.post("/train", json={"config": LONG, "activate": "never"}).json()
        queued = c.post("/train", json={"config": LONG, "activate": "never"}).json()
        wait_for(lambda: c.get(f"/jobs/{running['id']}").json()["status"] == "running", timeout=60)
        assert c.delete(f"/jobs/{queued['id']}").json()["status"] == "cancelled"
        c.delete(f"/jobs/{running['id']}")
        wait_for(
            lambda: value(scrape(c), "tickcast_job_duration_seconds_count", status="cancelled") == 1,
            timeout=60,
        )
        assert c.get(f"/jobs/{running['id']}").json()["status"] == "cancelled"
        got = scrape(c)
        assert value(got, "tickcast_job_queue_wait_seconds_count") == 2  # not the one that never ran
        assert value(got, "tickcast_job_duration_seconds_count", status="succeeded") == 1


def test_tick_counts_are_reused_for_a_while_then_recounted(tmp_path: Path) -> None:
    with TickStore(tmp_path / "t.db") as store:
        store.insert("kraken", "ETH-USD", synthetic.generate(100, seed=1))
        fresh, kept = TickCounts(reuse=0), TickCounts(reuse=1e9)
        assert fresh.get(store, "kraken", "ETH-USD") == kept.get(store, "kraken", "ETH-USD") == 100
        later = synthetic.generate(50, seed=2)
        assert store.insert("kraken", "ETH-USD", dataclasses.replace(later, trade_id=None)) == 50
        assert fresh.get(store, "kraken", "ETH-USD") == store.count("kraken", "ETH-USD") == 150
        assert kept.get(store, "kraken", "ETH-USD") == 100
        assert kept.get(store, "kraken", "BTC-USD") == 0  # counted per market


def test_readme_monitoring_names_only_metrics_that_exist(tmp_path: Path) -> None:
    section = README.split("### Monitoring", 1)[1].split("\n## ", 1)[0]
    names = set(re.findall(r"\b((?:tickcast|process|python)_[a-z_]+)", section))
    assert "tickcast_market_last_successful_pull_timestamp_seconds" in names
    with TestClient(create_app(make_settings(tmp_path))) as c:
        text = c.get("/metrics").text
    exposed = set(re.findall(r"^# TYPE (\S+) ", text, flags=re.M))
    samples = {ln.split("{")[0].split(" ")[0] for ln in text.splitlines() if ln and not ln.startswith("#")}
    assert names <= exposed | samples, names - exposed - samples
