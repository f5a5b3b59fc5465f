"""Replicas of the service on one PostgreSQL database, each with its own JobManager and real worker
processes: a job is seen everywhere, cancelled from anywhere, and a replica that dies (SIGKILL,
a real process) has its jobs settled by a live one, while a live one's jobs are left alone."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.market.store import TickStore
from app.services.jobs import shared
from app.services.jobs.manager import JobFinished, JobManager, JobRecord
from app.services.jobs.pg import PgJobStore
from app.services.registry import Registry
from tests.helpers.apps import make_settings
from tests.helpers.jobs import LONG, finished, models, spec, training, wait
from tests.helpers.jobs_api import seed_store
from tests.helpers.jobs_api import wait as wait_api

ROOT = Path(__file__).resolve().parents[2]

# A replica in a process of its own: a JobManager on the database that runs one long job and
# queues a second, says their ids, then serves until it is killed.
REPLICA = """
import asyncio, sys
from pathlib import Path
from app.market.store import TickStore
from app.services.jobs.manager import JobManager
from app.services.jobs.pg import PgJobStore
from app.services.registry import Registry
from tests.helpers.jobs import LONG, spec, training, wait

async def main(url: str, tmp: Path) -> None:
    m = JobManager(TickStore(tmp / "ticks.db"), Registry(tmp / "models"), job_store=PgJobStore(url))
    await m.start()
    running = m.submit(spec(LONG, ticks=6000))
    queued = m.submit(spec(LONG, ticks=6000))
    await wait(m, running.id, training, timeout=120)
    print(running.id, queued.id, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
"""


def replica(tmp: Path, url: str, name: str) -> JobManager:
    """A replica's job manager: its own tick store and models folder, the shared job database."""
    folder = tmp / name
    folder.mkdir(parents=True, exist_ok=True)
    return JobManager(
        TickStore(folder / "ticks.db"), Registry(folder / "models"), job_store=PgJobStore(url), concurrency=1
    )


async def close(*managers: JobManager) -> None:
    for m in managers:
        await m.stop()
        m.close()
        m.job_store.close()
        m.store.close()


async def until(
    what: Callable[[], JobRecord], done: Callable[[JobRecord], bool], timeout: float
) -> JobRecord:
    t0 = time.monotonic()
    while True:
        rec = what()
        if done(rec):
            return rec
        assert time.monotonic() - t0 < timeout, f"timed out; last record {rec}"
        await asyncio.sleep(0.05)


def test_a_job_is_seen_with_its_progress_and_cancelled_from_the_other_replica(tmp_path: Path, pg_url: str):
    async def main() -> None:
        a, b = replica(tmp_path, pg_url, "a"), replica(tmp_path, pg_url, "b")
        await a.start()
        await b.start()
        try:
            running = a.submit(spec(LONG, ticks=6000))
            queued = a.submit(spec(LONG, ticks=6000))
            await wait(a, running.id, training, timeout=60)
            # B runs nothing: it reads A's jobs from the database, with the progress A writes
            seen = await until(lambda: b.get(running.id), lambda r: "batch" in (r.progress or {}), 10)
            assert seen.status == "running" and seen.started_at is not None
            later = await until(lambda: b.get(running.id), lambda r: r.progress != seen.progress, 10)
            assert later.progress is not None and later.progress["batch"] != seen.progress["batch"]
            assert [r.id for r in b.list()] == [queued.id, running.id] and b._live == {}
            assert b.get(queued.id).status == "queued" and b.counts()["running"] == 1

            # a queued job cancelled on B: A hears it (NOTIFY) and B answers it cancelled
            t0 = time.monotonic()
            answer = await asyncio.to_thread(b.cancel, queued.id)  # as a route: in a thread
            assert answer.status == "cancelled" and answer.error == "cancelled before it started"
            assert time.monotonic() - t0 < shared.CANCEL_WAIT_S
            assert a.get(queued.id).status == "cancelled" and queued.id not in a._live

            # a running one: A stops its worker exactly as for a local cancel
            proc = a._live[running.id].proc
            t0 = time.monotonic()
            answer = await asyncio.to_thread(b.cancel, running.id)
            assert answer.status in ("running", "cancelled")
            if answer.status == "running":
                assert answer.progress is not None and answer.progress["cancel_requested"] is True
            done = await wait(a, running.id, finished, timeout=15)
            took = time.monotonic() - t0
            assert done.status == "cancelled" and done.error == "cancelled while it ran", done.error
            assert took < 6, took
            proc.join(5)
            assert not proc.is_alive()
            assert b.get(running.id).status == "cancelled" and b.get(queued.id).status == "cancelled"
            assert models(a.registry) == [] and a.registry.active_id() is None
            with pytest.raises(JobFinished) as again:  # finished: B says so, as A would
                await asyncio.to_thread(b.cancel, running.id)
            assert again.value.record.status == "cancelled"
            print(f"cancel from the other replica: a running job ended after {took:.2f} s")
        finally:
            await close(b, a)

    asyncio.run(main())


def test_through_the_api_a_job_on_one_replica_is_followed_and_cancelled_on_another(
    tmp_path: Path, pg_url: str
) -> None:
    one = create_app(make_settings(tmp_path / "one", database_url=pg_url))
    two = create_app(make_settings(tmp_path / "two", database_url=pg_url))
    with TestClient(one) as a, TestClient(two) as b:
        seed_store(a, 20000)  # the shared tick store: B's worker would read the same ticks
        job = a.post("/train", json={"config": LONG, "activate": "never"}).json()
        deadline, seen = time.monotonic() + 60, []
        while len({p["batch"] for p in seen}) < 2:  # B follows A's progress as A writes it
            j = b.get(f"/jobs/{job['id']}").json()
            if j["status"] == "running" and "batch" in (j["progress"] or {}):
                seen.append(j["progress"])
            assert time.monotonic() < deadline, j
            time.sleep(0.2)
        assert job["id"] in [j["id"] for j in b.get("/jobs").json()]
        t0 = time.monotonic()
        r = b.delete(f"/jobs/{job['id']}")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "cancelled" or r.json()["progress"]["cancel_requested"] is True
        done = wait_api(b, job["id"], {"cancelled", "failed", "succeeded", "interrupted"}, timeout=20)
        assert done["status"] == "cancelled" and time.monotonic() - t0 < 6, done
        assert a.get(f"/jobs/{job['id']}").json()["status"] == "cancelled"
        assert b.delete(f"/jobs/{job['id']}").status_code == 409
        assert a.get("/models").json() == [] and b.get("/models").json() == []


def test_the_poll_alone_delivers_a_cancel_when_no_notification_comes(tmp_path: Path, pg_url: str):
    """A notification may be lost (the owner's listener reconnecting): the owner also polls."""

    async def main() -> None:
        a, b = replica(tmp_path, pg_url, "a"), replica(tmp_path, pg_url, "b")
        await a.start()
        await b.start()
        try:
            assert a._shared is not None and a._shared._listener is not None
            await asyncio.to_thread(a._shared._listener.stop)  # A hears no NOTIFY from now on
            running = a.submit(spec(LONG, ticks=6000))
            queued = a.submit(spec(LONG, ticks=6000))
            # recorded; A finds it at its next look, within a second
            answer = await asyncio.to_thread(b.cancel, queued.id)
            assert answer.status in ("queued", "cancelled")
            rec = await wait(a, queued.id, finished, timeout=shared.CANCEL_POLL_S * 3)
            assert rec.status == "cancelled"
            a.cancel(running.id)  # and a local cancel is as it always was
            assert (await wait(a, running.id, finished, timeout=15)).status == "cancelled"
        finally:
            await close(b, a)

    asyncio.run(main())


@contextmanager
def replica_process(tmp: Path, url: str) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """A replica in a process of its own, running one job and queueing another: (process, ids)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    tmp.mkdir(parents=True, exist_ok=True)
    log = tmp / "replica.log"  # its stderr: what it said if it failed, and a SIGKILL's leftovers
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", REPLICA, url, str(tmp)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until its job trains (or it dies)
        assert line, f"the replica process exited with {proc.wait()}: {log.read_text()}"
        running, queued = line.split()
        yield proc, running, queued
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_a_replica_killed_by_sigkill_has_its_jobs_interrupted_by_a_live_one(tmp_path: Path, pg_url: str):
    async def main() -> None:
        with replica_process(tmp_path / "a", pg_url) as (proc, running, queued):
            b = replica(tmp_path, pg_url, "b")
            await b.start()  # its start settles dead replicas' jobs: A lives, so none of its
            try:
                assert b.get(running).status == "running"
                assert b.get(queued).status == "queued"
                await asyncio.sleep(shared.SWEEP_S + 1)  # nor do its sweeps
                assert b.get(running).status == "running" and b.get(queued).status == "queued"
                before = b.get(running).progress
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                t0 = time.monotonic()
                gone = await until(lambda: b.get(running), finished, shared.SWEEP_S + 5)
                took = time.monotonic() - t0
                assert gone.status == "interrupted" and gone.error == "the service stopped while it ran"
                left = b.get(queued)
                assert left.status == "interrupted"
                assert left.error == "the service stopped before the job started"
                assert before is not None and gone.finished_at is not None
                assert b._live == {} and b.counts()["interrupted"] == 2
                print(f"a SIGKILLed replica's running job was interrupted after {took:.2f} s")
            finally:
                await close(b)

    asyncio.run(main())


def test_a_new_replica_leaves_a_live_one_s_jobs_alone_but_settles_a_stopped_one_s(
    tmp_path: Path, pg_url: str
) -> None:
    async def main() -> None:
        a = replica(tmp_path, pg_url, "a")
        await a.start()
        gone = replica(tmp_path, pg_url, "gone")  # never started: its job stays queued
        orphan = gone.submit(spec())
        try:
            running = await wait(a, a.submit(spec(LONG, ticks=6000)).id, training, timeout=60)
            gone.close()  # as a crash: its lock is released, its job still says queued
            b = replica(tmp_path, pg_url, "b")
            await b.start()
            try:
                assert b.get(orphan.id).status == "interrupted"
                assert b.get(running.id).status == "running" and a.get(running.id).status == "running"
                assert a.get(orphan.id).status == "interrupted"  # what B wrote, A reads
            finally:
                await close(b)
            a.cancel(running.id)
            assert (await wait(a, running.id, finished, timeout=15)).status == "cancelled"
        finally:
            gone.job_store.close()
            gone.store.close()
            await close(a)

    asyncio.run(main())


def lock_holders(url: str, key: int) -> list[int]:
    """The backends holding the session advisory lock `key` (pg_locks splits a bigint key in two)."""
    import psycopg

    unsigned = key & (2**64 - 1)
    with psycopg.connect(url) as c:
        rows = c.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s"
            " AND objsubid = 1 AND granted AND database = (SELECT oid FROM pg_database"
            " WHERE datname = current_database())",
            (unsigned >> 32, unsigned & 0xFFFFFFFF),
        ).fetchall()
    return [r[0] for r in rows]


def test_a_replica_whose_lock_connection_is_lost_takes_its_lock_again_and_frees_it_at_close(
    tmp_path: Path, pg_url: str
) -> None:
    import psycopg

    async def main() -> None:
        a = replica(tmp_path, pg_url, "a")
        await a.start()
        try:
            assert a._shared is not None
            key = a._shared._key
            (first,) = lock_holders(pg_url, key)
            with psycopg.connect(pg_url, autocommit=True) as c:
                c.execute("SELECT pg_terminate_backend(%s)", (first,))
            t0 = time.monotonic()
            while lock_holders(pg_url, key) in ([], [first]):
                assert time.monotonic() - t0 < 3 * shared.KEEP_S, "the lock was not taken again"
                await asyncio.sleep(0.05)
            (second,) = lock_holders(pg_url, key)
            assert second != first
        finally:
            await close(a)
        assert lock_holders(pg_url, key) == []  # closed: the others may settle what it left

    asyncio.run(main())


def test_owner_keys_are_stable_and_distinct() -> None:
    assert shared.owner_key("abc") == shared.owner_key("abc") != shared.owner_key("abd")
    assert -(2**63) <= shared.owner_key("abc") < 2**63
