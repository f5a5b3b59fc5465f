"""JobManager with real worker processes on tiny synthetic jobs (a few seconds each)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from app.market.markets import Market
from app.market.sources import synthetic
from app.market.store import TickStore
from app.ml.training import FEW_WINDOWS, MIN_WINDOWS, TooFewTicks
from app.services.ingestion.scheduler import Ingestor
from app.services.jobs import worker as job_worker
from app.services.jobs.manager import InvalidJobSpec, JobFinished, JobManager, JobRecord, JobSpec, UnknownJob
from app.services.jobs.spec import validate_spec
from app.services.registry import should_promote
from tests.helpers.jobs import LONG, SMALL, finished, models, spec, training, wait


def test_queue_run_and_promotion_policies(parts) -> None:
    store, registry = parts

    async def main() -> None:
        m = JobManager(store, registry, concurrency=1)
        await m.start()
        a = m.submit(spec(activate="always"))
        b = m.submit(spec(activate="never"))
        c = m.submit(spec(activate="never"))
        assert a.status == "queued" and len(a.id) == 12
        a = await wait(m, a.id, lambda r: r.status == "running")
        assert m.get(b.id).status == "queued"  # concurrency 1: the second one waits
        assert m.cancel(c.id).status == "cancelled"  # a queued job is cancelled at once
        a = await wait(m, a.id, finished)
        assert a.status == "succeeded", a.error
        r = a.result
        assert r["model_id"] in models(registry) and r["activated"] is True
        assert r["reason"] == "policy is 'always'" and registry.active_id() == r["model_id"]
        assert set(r["metrics"]) == {"val", "test"} and 0 <= r["challenger_val_auc"] <= 1
        assert r["challenger_val_auc"] == pytest.approx(r["metrics"]["val"]["auc"])
        assert a.started_at is not None and a.finished_at >= a.started_at
        b = await wait(m, b.id, finished)
        assert b.status == "succeeded" and b.result["activated"] is False
        assert registry.active_id() == r["model_id"] and b.result["model_id"] in models(registry)
        # if_better: both models scored on the same validation windows, decision recorded
        d = await wait(
            m, m.submit(spec(activate="if_better", config={**SMALL, "hidden_size": 12})).id, finished
        )
        assert d.status == "succeeded", d.error
        rd = d.result
        assert rd["incumbent_id"] == r["model_id"]
        assert rd["incumbent_val_auc"] == pytest.approx(r["challenger_val_auc"])  # same data
        assert (rd["activated"], rd["reason"]) == should_promote(
            "if_better", rd["challenger_val_auc"], rd["incumbent_val_auc"]
        )
        want = rd["model_id"] if rd["activated"] else r["model_id"]
        assert registry.active_id() == want
        assert m.counts() == {
            "queued": 0,
            "running": 0,
            "succeeded": 3,
            "failed": 0,
            "cancelled": 1,
            "interrupted": 0,
        }
        assert [j.id for j in m.list()] == [d.id, c.id, b.id, a.id]
        await m.stop()

    asyncio.run(main())


def test_on_finish_gets_the_decision_and_does_the_activation(parts) -> None:
    store, registry = parts
    calls: list[JobRecord] = []

    async def main() -> None:
        m = JobManager(store, registry, on_finish=calls.append)
        await m.start()
        rec = await wait(m, m.submit(spec(activate="always")).id, finished)
        await m.stop()
        assert rec.status == "succeeded" and rec.result["activated"] is True
        assert [c.id for c in calls] == [rec.id] and calls[0].status == "succeeded"
        assert registry.active_id() is None  # activating was on_finish's job

    asyncio.run(main())


def test_progress_while_running_then_cancel(parts) -> None:
    store, registry = parts

    async def main() -> None:
        m = JobManager(store, registry)
        await m.start()
        rec = m.submit(spec(LONG, ticks=6000))
        rec = await wait(m, rec.id, training)
        p = rec.progress
        assert p["num_epochs"] == 50 and p["batch"] >= 1 and p["loss"] > 0
        await asyncio.sleep(1.2)  # progress is also written to the store (about once a second)
        with closing(sqlite3.connect(store.path)) as db:  # the job store's table, read as it is
            (row,) = db.execute("SELECT progress FROM jobs WHERE id = ?", (rec.id,)).fetchone()
        assert '"batch"' in row
        t0 = time.monotonic()
        assert m.cancel(rec.id).status == "running"  # asked; the worker stops between batches
        rec = await wait(m, rec.id, finished, timeout=10)
        assert rec.status == "cancelled" and time.monotonic() - t0 < 5
        assert models(registry) == [] and registry.active_id() is None
        with pytest.raises(JobFinished) as done:  # finished: unchanged
            m.cancel(rec.id)
        assert done.value.record.status == "cancelled" and m.get(rec.id).status == "cancelled"
        await m.stop()

    asyncio.run(main())


def test_bad_input_is_refused_before_anything_is_recorded(parts) -> None:
    store, registry = parts
    m = JobManager(store, registry)
    for bad in (
        {"arch": "Transformer9"},
        {"num_epochs": -1},
        {"lr": 0},
        {"bogus": 1},
        {"train_split": 0.9, "val_split": 0.3},
    ):
        with pytest.raises(ValueError):
            m.submit(spec(bad))
    with pytest.raises(ValueError, match="activate"):
        m.submit(spec(activate="sometimes"))
    with pytest.raises(ValueError, match="end must be after start"):
        m.submit(JobSpec("synthetic", "BTC-USD", 10.0, 5.0, SMALL))
    assert m.list() == [] and sum(m.counts().values()) == 0
    for bad_id in ("nope", "../../etc", "0123456789ab"):
        with pytest.raises(UnknownJob):
            m.get(bad_id)
        with pytest.raises(UnknownJob):
            m.cancel(bad_id)


def test_too_few_ticks_are_refused_at_submission_with_what_to_do(parts) -> None:
    """Found when the job is submitted, not minutes later in its worker; nothing is recorded."""
    store, registry = parts
    store.insert("bitstamp", "BTC-USD", synthetic.generate(900, seed=2))  # the case: ~900 ticks
    m = JobManager(store, registry)
    for s, words in (
        (spec(exchange="bitstamp"), "bitstamp:BTC-USD has 900 ticks"),
        (spec(exchange="kraken"), "kraken:BTC-USD has 0 ticks"),
    ):
        with pytest.raises(TooFewTicks) as e:
            m.submit(s)
        msg = str(e.value)
        assert msg.startswith(words) and f"at least {MIN_WINDOWS:,} windows" in msg
        # what to do in domain words; the API's routes and the CLI's command are the HTTP
        # answer's to add (tests/api/test_error_answers.py)
        assert "1,033 ticks at seq_len 16" in msg and msg.endswith(": pull or import more of its ticks")
        assert isinstance(e.value, InvalidJobSpec)  # POST /train answers it with 422
        assert e.value.loc == ("body", "symbol")
    # a time range counts only the ticks inside it, and says so
    t = store.read("bitstamp", "BTC-USD").time
    with pytest.raises(TooFewTicks, match="from .* before .* has 0 ticks.*widen start and end"):
        m.submit(JobSpec("bitstamp", "BTC-USD", float(t[-1]) + 1, float(t[-1]) + 99, dict(SMALL)))
    # a time no calendar holds is said as its number, not a crash (schemathesis found -1.5e259)
    with pytest.raises(TooFewTicks, match=r"from -1\.5e\+259 s before 1e\+30 s has 900 ticks"):
        m.submit(JobSpec("bitstamp", "BTC-USD", -1.5e259, 1e30, dict(SMALL)))
    assert m.list() == [] and m.counts()["queued"] == 0
    # a synthetic market with nothing stored is generated by the worker: accepted
    assert m.submit(spec(exchange="synthetic")).status == "queued"


def test_the_worker_refuses_too_few_ticks_too(parts, tmp_path: Path) -> None:
    """Ticks can go between submission and the run (another store, a job from elsewhere): the
    worker's own check fails the job with the same advice, before any training."""
    store, registry = parts
    store.insert("bitstamp", "BTC-USD", synthetic.generate(900, seed=2))
    sent: list[tuple[str, object]] = []

    class Q:
        def put(self, item: tuple[str, object]) -> None:
            sent.append(item)

    spec_dict = validate_spec(spec(exchange="bitstamp"))
    with pytest.raises(TooFewTicks, match="bitstamp:BTC-USD has 900 ticks.*1,033 ticks"):
        job_worker._train(spec_dict, store.path, str(registry.folder), 1, Q(), lambda: False)
    assert [k for k, _ in sent] == ["progress"]  # "loading data" only: nothing trained or saved
    assert models(registry) == []


def test_a_job_on_few_ticks_says_its_metrics_are_noisy(parts) -> None:
    store, registry = parts

    async def main() -> None:
        m = JobManager(store, registry)
        await m.start()
        rec = await wait(m, m.submit(spec(ticks=3000)).id, finished)
        await m.stop()
        assert rec.status == "succeeded", rec.error
        (warning,) = rec.result["warnings"]
        assert warning.startswith("few ticks: 2,967 windows (59") and "validation AUC +-0.0" in warning
        assert f"{FEW_WINDOWS:,} windows or more" in warning

    asyncio.run(main())


def test_restart_marks_left_over_jobs_interrupted(parts) -> None:
    store, registry = parts
    old = JobManager(store, registry)  # never started: its job stays queued, as after a crash
    queued = old.submit(spec())
    with closing(sqlite3.connect(store.path)) as db, db:  # a row written by an older process
        db.execute(
            "INSERT INTO jobs (id, status, spec, created_at, started_at)"
            " VALUES ('00000000abcd', 'running', '{}', 1.0, 2.0)"
        )

    async def main() -> None:
        m = JobManager(store, registry)
        await m.start()
        for job_id in (queued.id, "00000000abcd"):
            rec = m.get(job_id)
            assert rec.status == "interrupted" and rec.finished_at is not None
            assert "the service stopped" in rec.error
        assert m.counts()["interrupted"] == 2
        await m.stop()

    asyncio.run(main())


def test_stop_interrupts_running_jobs_and_leaves_no_process(parts) -> None:
    store, registry = parts

    async def main() -> None:
        m = JobManager(store, registry, concurrency=1)
        await m.start()
        running = await wait(m, m.submit(spec(LONG, ticks=6000)).id, training)
        waiting = m.submit(spec())
        proc = m._live[running.id].proc
        await m.stop()
        assert not proc.is_alive() and proc.exitcode is not None
        for job_id in (running.id, waiting.id):
            rec = m.get(job_id)
            assert rec.status == "interrupted" and "the service stopped" in rec.error
        assert models(registry) == []

    asyncio.run(main())


def test_a_worker_that_dies_is_recorded_failed(parts) -> None:
    store, registry = parts

    async def main() -> None:
        m = JobManager(store, registry)
        await m.start()
        rec = await wait(m, m.submit(spec(LONG, ticks=6000)).id, training)
        m._live[rec.id].proc.kill()
        rec = await wait(m, rec.id, finished)
        await m.stop()
        assert rec.status == "failed" and rec.error.startswith("worker exited with code -9")

    asyncio.run(main())


# ---------------------------------------------------------------- the scheduled retraining


def retraining(store: TickStore, m: JobManager, symbols: list[str]) -> Ingestor:
    """The ingestor whose cron job retrains every market (`_retrain` is what the trigger runs)."""
    return Ingestor(
        store,
        [Market("synthetic", s) for s in symbols],
        source_urls={},
        interval_s=60,
        enabled=False,
        jobs=m,
        retrain_cron="0 3 * * *",
    )


def test_a_full_queue_skips_a_market_with_a_warning_and_the_retrain_goes_on(parts, caplog) -> None:
    store, registry = parts
    m = JobManager(store, registry, queue_max=1)  # not started: what is queued stays queued
    with caplog.at_level(logging.WARNING, logger="app.services.ingestion.scheduler"):
        retraining(store, m, ["AAA-USD", "BBB-USD", "CCC-USD"])._retrain()
    assert [(j.spec["symbol"], j.spec["activate"]) for j in m.list()] == [("AAA-USD", "if_better")]
    warned = [r.getMessage() for r in caplog.records if r.name == "app.services.ingestion.scheduler"]
    assert len(warned) == 2  # every market was tried, the full queue did not end the loop
    for symbol, text in zip(["BBB-USD", "CCC-USD"], warned, strict=True):
        assert f"retraining of synthetic:{symbol} was skipped" in text
        assert "the training queue is full" in text and "Raise TICKCAST_JOB_QUEUE_MAX or wait" in text


def test_a_store_that_cannot_record_a_job_skips_that_market_only(parts, tmp_path, caplog) -> None:
    """Another connection holds the write lock for 7 s, past SQLite's 5 s busy timeout: the
    first market's job cannot be recorded; the second market's waits out the rest and is
    queued."""
    store, registry = parts
    m = JobManager(store, registry)
    holder = sqlite3.connect(tmp_path / "t.db", isolation_level=None, timeout=0, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(7.0, holder.execute, ("ROLLBACK",))
    release.start()
    try:
        with caplog.at_level(logging.WARNING, logger="app.services.ingestion.scheduler"):
            retraining(store, m, ["AAA-USD", "BBB-USD"])._retrain()
    finally:
        release.join()
        holder.close()
    assert [j.spec["symbol"] for j in m.list()] == ["BBB-USD"]
    warned = [r.getMessage() for r in caplog.records if r.name == "app.services.ingestion.scheduler"]
    assert len(warned) == 1 and "retraining of synthetic:AAA-USD was skipped" in warned[0]
    assert "the job could not be recorded" in warned[0] and "TICKCAST_RETRAIN_CRON" in warned[0]
