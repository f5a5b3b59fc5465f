"""The job queue under real faults: a store that refuses writes, a locked store, a killed
worker, a full queue, and what a killed service left behind (checked at the next start)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from app.market.sources import synthetic
from app.market.store import TickStore
from app.ml import checkpoint, training
from app.services.jobs.manager import JobManager, QueueFull
from app.services.jobs.spec import validate_spec
from app.services.jobs.sqlite import SqliteJobStore
from app.services.registry import Registry
from tests.helpers.jobs import LONG, SMALL, finished, models, spec, wait
from tests.helpers.jobs import training as is_training

# trains for several seconds (about 0.5 s an epoch here), so it outlives a 3 s outage
MEDIUM = {**SMALL, "num_epochs": 14, "patience": 0, "batch_size": 32}


@contextmanager
def refusing_writes(db: Path) -> Iterator[None]:
    """The store really refuses writes, for root too: the immutable flag (`chattr +i`) on the
    database and its WAL, which SQLite answers with "disk I/O error", as a failing disk. File
    permissions would not stop root. The -shm file is left alone: SQLite maps it, and a
    store into an immutable mapping is a SIGBUS."""
    files = [str(db), f"{db}-wal"]
    r = subprocess.run(["chattr", "+i", *files], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"chattr +i is not possible here: {r.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *files], check=True)


def stored(db: Path, job_id: str) -> dict | None:
    """The job's row as the store has it, read by a connection of its own."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        row = c.execute("SELECT status, result, error FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return (
        None if row is None else {"status": row[0], "result": row[1] and json.loads(row[1]), "error": row[2]}
    )


async def until(pred, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_a_store_refusing_writes_for_3s_does_not_stop_a_training_job(parts, tmp_path) -> None:
    store, registry = parts
    db = tmp_path / "t.db"

    async def main() -> None:
        m = JobManager(store, registry, concurrency=1)
        await m.start()
        a = m.submit(spec(MEDIUM, activate="never", ticks=6000))
        b = m.submit(spec(activate="never"))
        rec = await wait(m, a.id, is_training)
        proc = m._live[a.id].proc
        before = rec.progress
        with refusing_writes(db):
            with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
                store.insert("synthetic", "ETH-USD", synthetic.generate(50, seed=1))
            await asyncio.sleep(3.0)  # progress writes fail meanwhile (about one a second)
            during = m.get(a.id)
            assert during.status in ("running", "succeeded"), during.error
            assert during.progress != before  # training went on, and its progress was relayed
        a = await wait(m, a.id, finished)
        assert a.status == "succeeded", a.error
        b = await wait(m, b.id, finished)  # the next job started and ran
        assert b.status == "succeeded", b.error
        await until(lambda: stored(db, a.id)["status"] == "succeeded", 10)
        await until(lambda: stored(db, b.id)["status"] == "succeeded", 10)  # written as soon as it can be
        assert stored(db, a.id)["result"]["model_id"] == a.result["model_id"]
        assert not proc.is_alive() and proc.exitcode == 0  # reaped, no zombie
        assert m.worker_deaths == 0
        await m.stop()

    asyncio.run(main())


def test_a_final_record_the_store_refuses_is_kept_and_written_later(parts, tmp_path) -> None:
    store, registry = parts
    db = tmp_path / "t.db"

    async def main() -> None:
        m = JobManager(store, registry, concurrency=1)
        await m.start()
        a = m.submit(spec(activate="never"))
        b = m.submit(spec(MEDIUM, activate="never", ticks=6000))
        await wait(m, a.id, lambda r: r.status == "running")
        with refusing_writes(db):
            a = await wait(m, a.id, finished)  # its end could not be written...
            assert a.status == "succeeded", a.error
            assert stored(db, a.id)["status"] in ("queued", "running")
            # ...but it shows as it is, and the queue moved on
            await wait(m, b.id, lambda r: r.status == "running")
            listed = {j.id: j.status for j in m.list()}
            assert listed == {a.id: "succeeded", b.id: "running"}
            assert m.counts()["succeeded"] == 1
        await until(lambda: stored(db, a.id)["status"] == "succeeded", 10)  # written once it can be
        assert stored(db, a.id)["result"]["model_id"] == a.result["model_id"] in models(registry)
        b = await wait(m, b.id, finished)
        assert b.status == "succeeded", b.error
        await until(lambda: stored(db, b.id)["status"] == "succeeded", 10)
        await m.stop()

    asyncio.run(main())


def test_a_store_locked_past_the_busy_timeout_delays_but_does_not_fail_a_job(parts, tmp_path):
    """Another connection holds the write lock for 7 s, longer than SQLite's 5 s busy timeout:
    the parent's writes and the worker's opening of the store fail with "database is locked"
    and are retried; the job runs and its record lands."""
    store, registry = parts
    db = tmp_path / "t.db"

    async def main() -> None:
        m = JobManager(store, registry, concurrency=1)
        await m.start()
        a = m.submit(spec(activate="never"))
        holder = sqlite3.connect(db, isolation_level=None, timeout=0)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            other = sqlite3.connect(db, timeout=0)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            other.close()
            t0 = time.monotonic()
            while time.monotonic() - t0 < 7.0:
                rec = m.get(a.id)
                assert rec.status in ("queued", "running", "succeeded"), rec.error
                await asyncio.sleep(0.2)
            assert m.get(a.id).status == "running"  # started meanwhile
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        a = await wait(m, a.id, finished, timeout=60)
        assert a.status == "succeeded", a.error
        await until(lambda: stored(db, a.id)["status"] == "succeeded", 15)
        await m.stop()

    asyncio.run(main())


def test_a_killed_worker_is_noticed_within_a_second_and_the_next_job_runs(parts) -> None:
    store, registry = parts

    async def main() -> None:
        m = JobManager(store, registry, concurrency=1)
        await m.start()
        a = await wait(m, m.submit(spec(LONG, ticks=6000)).id, is_training)
        b = m.submit(spec(activate="never"))
        proc = m._live[a.id].proc
        os.kill(proc.pid, signal.SIGKILL)
        t0 = time.monotonic()
        a = await wait(m, a.id, finished, timeout=10)
        noticed = time.monotonic() - t0
        assert noticed < 2.5, noticed  # polled every 0.1 s; generous for a loaded machine
        assert a.status == "failed" and a.error.startswith("worker exited with code -9")
        assert "SIGKILL" in a.error and "out of memory" in a.error and "POST /train" in a.error
        assert m.worker_deaths == 1 and proc.exitcode == -9
        b = await wait(m, b.id, finished)
        assert b.status == "succeeded", b.error
        assert m.get(a.id).status == "failed" and m.worker_deaths == 1
        await m.stop()

    asyncio.run(main())


def test_a_worker_killed_after_saving_leaves_its_model_claimed(parts) -> None:
    """The model file is there (put in place as the worker would have saved it); the worker
    dies before it reports: the job is failed, and its record names the model."""
    store, registry = parts

    async def main() -> None:
        m = JobManager(store, registry, concurrency=1)
        await m.start()
        a = await wait(m, m.submit(spec(LONG, ticks=6000)).id, is_training)
        model_id = save_model(registry, job_id=a.id)
        os.kill(m._live[a.id].proc.pid, signal.SIGKILL)
        a = await wait(m, a.id, finished, timeout=10)
        await m.stop()
        assert a.status == "failed" and a.error.startswith("worker exited with code -9")
        assert a.result["model_id"] == model_id and a.result["activated"] is False
        assert f"POST /models/{model_id}/activate" in a.error
        assert models(registry) == [model_id] and registry.active_id() is None

    asyncio.run(main())


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling classes")
def test_the_worker_trains_as_background_work(parts) -> None:
    """Serving wins the CPU: the worker's threads are SCHED_IDLE (a waking request preempts them
    at once) and keep off the first CPU when there are others."""
    store, registry = parts

    async def main() -> None:
        m = JobManager(store, registry, threads=1)
        await m.start()
        rec = await wait(m, m.submit(spec(LONG, ticks=6000)).id, is_training)
        pid = m._live[rec.id].proc.pid
        ours = os.sched_getaffinity(0)
        trainers = [
            int(t)
            for t in os.listdir(f"/proc/{pid}/task")
            if Path(f"/proc/{pid}/task/{t}/stat").read_text().rsplit(")", 1)[1].split()[0] == "R"
        ] or [pid]
        for tid in {pid, *trainers}:
            assert os.sched_getscheduler(tid) == os.SCHED_IDLE
            if len(ours) > 1:
                assert os.sched_getaffinity(tid) == ours - {min(ours)}
        assert os.getpriority(os.PRIO_PROCESS, pid) == 10
        m.cancel(rec.id)
        await wait(m, rec.id, finished)
        await m.stop()

    asyncio.run(main())


def test_a_full_queue_refuses_and_records_nothing(parts) -> None:
    store, registry = parts
    m = JobManager(store, registry, queue_max=2)  # not started: everything stays queued
    first, _ = m.submit(spec()), m.submit(spec())
    # the setting's name is the HTTP answer's to add (tests/api/test_error_answers.py)
    with pytest.raises(QueueFull, match=r"wait for a worker \(at most 2\); nothing was queued") as e:
        m.submit(spec())
    assert e.value.retry_after_s > 0 and (e.value.waiting, e.value.limit) == (2, 2)
    assert len(m.list()) == 2 and m.counts()["queued"] == 2
    assert m.cancel(first.id).status == "cancelled"  # a slot frees up
    m.submit(spec())
    assert m.counts()["queued"] == 2 and len(m.list()) == 3


# ---------------------------------------------------------------- left behind by a killed service


def save_model(registry: Registry, job_id: str | None, seed: int = 0) -> str:
    """A real, small checkpoint whose metadata names the job that trained it."""
    cfg = training.TrainConfig(
        arch="CNN",
        hidden_size=8,
        num_layers=1,
        num_epochs=1,
        seq_len=16,
        batch_size=256,
        patience=0,
        seed=seed,
        device="cpu",
    )
    fitted = training.fit(synthetic.generate(2000, seed=seed), cfg)
    if job_id is not None:
        fitted.meta.job_id = job_id
    checkpoint.save(registry.folder / f"{fitted.model.id}.pt", fitted.model.net.state_dict(), fitted.meta)
    return fitted.model.id


def put_job(store: TickStore, job_id: str, status: str, result: dict | None = None) -> None:
    """A row as a killed process left it, written by a connection of its own (the job store
    makes its table first: no job manager opened this file yet)."""
    SqliteJobStore(store.path).close()
    with closing(sqlite3.connect(store.path)) as db, db:
        db.execute(
            "INSERT INTO jobs (id, status, spec, result, created_at, started_at, finished_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                job_id,
                status,
                json.dumps(validate_spec(spec())),
                result and json.dumps(result),
                1.0,
                2.0,
                None if status in ("queued", "running") else 3.0,
            ),
        )


def test_start_claims_models_whose_jobs_never_recorded_them(parts) -> None:
    store, registry = parts
    # killed between "model saved" and "result recorded": the record still says running
    put_job(store, "00000000aaaa", "running")
    saved = save_model(registry, "00000000aaaa", seed=0)
    put_job(store, "00000000bbbb", "cancelled")  # cancelled: its model must not stay
    dropped = save_model(registry, "00000000bbbb", seed=1)
    put_job(store, "00000000cccc", "interrupted")  # stopped after saving, before reporting
    late = save_model(registry, "00000000cccc", seed=2)
    done = save_model(registry, "00000000dddd", seed=3)
    put_job(store, "00000000dddd", "succeeded", {"model_id": done, "activated": False})
    stranger = save_model(registry, "00000000eeee", seed=4)  # no such job in this store
    mine = save_model(registry, None, seed=5)  # trained by hand: no job

    async def main() -> None:
        m = JobManager(store, registry)
        await m.start()
        rec = m.get("00000000aaaa")
        assert rec.status == "interrupted" and rec.finished_at is not None
        assert rec.result["model_id"] == saved and rec.result["activated"] is False
        assert rec.result["metrics"]["val"]["auc"] == rec.result["challenger_val_auc"]
        assert "saved" in rec.error and f"POST /models/{saved}/activate" in rec.error
        late_rec = m.get("00000000cccc")
        assert late_rec.status == "interrupted" and late_rec.result["model_id"] == late
        assert m.get("00000000dddd").result == {"model_id": done, "activated": False}
        await m.stop()

    asyncio.run(main())
    assert stored(Path(store.path), "00000000aaaa")["result"]["model_id"] == saved
    assert models(registry) == sorted([saved, late, done, stranger, mine])
    assert dropped not in models(registry)
