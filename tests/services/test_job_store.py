"""The job stores: what every JobStore backend promises (run on a SQLite file and on PostgreSQL);
SqliteJobStore's own schema versions in the tick store's file and the files written before it had
them; PgJobStore's versioned schema, a lost connection and a database that cannot answer."""

from __future__ import annotations

import inspect
import math
import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import pytest

from app.market.storage import StoreError
from app.market.store import SCHEMA_VERSION as TICK_SCHEMA_VERSION
from app.market.store import TickStore
from app.services.jobs import pg as job_pg
from app.services.jobs import sqlite as job_sqlite
from app.services.jobs.backends import open_job_store
from app.services.jobs.pg import PgJobStore
from app.services.jobs.records import JobTable, StoreUnavailable
from app.services.jobs.sqlite import SqliteJobStore
from app.services.jobs.states import JobStatus
from app.services.jobs.store import JobRecord, JobStore, JobStoreError

# A data/tickcast.db as the tickcast before the job store had a schema of its own wrote it: the tick
# store's three migrations, copied literally (jobs at version 2), user_version 3, and its rows.
OLD_FILE = [
    """CREATE TABLE markets (
            id INTEGER PRIMARY KEY, exchange TEXT NOT NULL, symbol TEXT NOT NULL,
            next_seq INTEGER NOT NULL DEFAULT 0, has_trade_id INTEGER NOT NULL DEFAULT 0,
            has_side INTEGER NOT NULL DEFAULT 0, UNIQUE (exchange, symbol))""",
    """CREATE TABLE ticks (
            market_id INTEGER NOT NULL REFERENCES markets (id), time REAL NOT NULL,
            seq INTEGER NOT NULL, price REAL NOT NULL, amount REAL NOT NULL,
            trade_id TEXT, side TEXT, ord INTEGER,
            PRIMARY KEY (market_id, time, seq)) WITHOUT ROWID""",
    """CREATE UNIQUE INDEX ticks_trade_id ON ticks (market_id, trade_id)
            WHERE trade_id IS NOT NULL""",
    """CREATE UNIQUE INDEX ticks_no_id ON ticks (market_id, time, price, amount, ord)
            WHERE trade_id IS NULL""",
    """CREATE TABLE jobs (
            id TEXT PRIMARY KEY, status TEXT NOT NULL, spec TEXT NOT NULL, progress TEXT,
            result TEXT, error TEXT, created_at REAL NOT NULL, started_at REAL,
            finished_at REAL)""",
    "CREATE INDEX jobs_created ON jobs (created_at)",
    "CREATE INDEX jobs_status ON jobs (status)",
    """CREATE TABLE cursors (
            market_id INTEGER PRIMARY KEY REFERENCES markets (id), cursor TEXT NOT NULL,
            updated_at REAL NOT NULL)""",
    "PRAGMA user_version = 3",
    "PRAGMA journal_mode=WAL",
    """INSERT INTO markets (id, exchange, symbol, next_seq, has_trade_id)
        VALUES (1, 'kraken', 'ETH-USD', 2, 1)""",
    "INSERT INTO ticks VALUES (1, 10.0, 0, 100.5, 0.25, 't1', NULL, NULL)",
    "INSERT INTO ticks VALUES (1, 11.0, 1, 101.0, 0.5, 't2', NULL, NULL)",
    "INSERT INTO cursors VALUES (1, 't2', 12.0)",
    """INSERT INTO jobs VALUES ('0123456789ab', 'succeeded',
        '{"exchange": "kraken", "symbol": "ETH-USD", "activate": "never"}',
        '{"epoch": 1, "num_epochs": 1}', '{"model_id": "cnn-1", "activated": false}', NULL,
        1.0, 2.0, 3.0)""",
    """INSERT INTO jobs (id, status, spec, created_at, started_at)
        VALUES ('00000000abcd', 'running', '{}', 4.0, 5.0)""",
]


def old_file(path: Path) -> None:
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        for stmt in OLD_FILE:
            db.execute(stmt)


def record(job_id: str, status: JobStatus = JobStatus.QUEUED, created_at: float = 1.0) -> JobRecord:
    return JobRecord(job_id, status, {"exchange": "synthetic"}, None, None, None, created_at, None, None)


def test_a_file_written_before_the_job_store_had_its_own_schema_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "tickcast.db"
    old_file(path)
    with TickStore(path) as ticks, SqliteJobStore(path) as jobs:
        assert ticks.schema_version == TICK_SCHEMA_VERSION == 3
        got = ticks.read("kraken", "ETH-USD")
        assert got.trade_id is not None and got.trade_id.tolist() == ["t1", "t2"]
        assert got.price.tolist() == [100.5, 101.0]
        assert ticks.cursor("kraken", "ETH-USD") == "t2"
        assert jobs.schema_version == job_sqlite.SCHEMA_VERSION
        done = jobs.get("0123456789ab")
        assert done == JobRecord(
            "0123456789ab",
            JobStatus.SUCCEEDED,
            {"exchange": "kraken", "symbol": "ETH-USD", "activate": "never"},
            {"epoch": 1, "num_epochs": 1},
            {"model_id": "cnn-1", "activated": False},
            None,
            1.0,
            2.0,
            3.0,
        )
        assert done is not None and done.status == "succeeded"
        assert [r.id for r in jobs.unfinished()] == ["00000000abcd"]
        assert [r.id for r in jobs.newest(10)] == ["00000000abcd", "0123456789ab"]
        jobs.put(record("0000000000ff", created_at=6.0))  # and it takes new ones
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3  # the tick store's, untouched
        assert db.execute("SELECT version FROM jobs_schema").fetchall() == [(job_sqlite.SCHEMA_VERSION,)]
        assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 3


def test_a_file_from_before_the_jobs_table_gets_it_from_the_job_store(tmp_path: Path) -> None:
    """Tick store version 1 never had a jobs table; it no longer makes one on its upgrade."""
    path = tmp_path / "t.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        for stmt in OLD_FILE[:4]:
            db.execute(stmt)
        db.execute("PRAGMA user_version = 1")
    with TickStore(path) as ticks:
        assert ticks.schema_version == TICK_SCHEMA_VERSION
    assert "jobs" not in tables(path)
    with SqliteJobStore(path) as jobs:
        jobs.put(record("0000000000aa"))
        assert jobs.get("0000000000aa") == record("0000000000aa")
    assert {"jobs", "jobs_schema", "ticks", "cursors"} <= tables(path)


def test_the_tick_store_leaves_the_jobs_table_to_the_job_store(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with TickStore(path):
        pass
    assert "jobs" not in tables(path) and "jobs_schema" not in tables(path)
    assert not hasattr(TickStore, "transaction")  # no door into the tick store's connection
    old = tmp_path / "old.db"
    old_file(old)
    with TickStore(old):
        pass
    with closing(sqlite3.connect(old)) as db:  # an old file's table is left as it was
        assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 2


def test_a_newer_job_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    SqliteJobStore(path).close()
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE jobs_schema SET version = ?", (job_sqlite.SCHEMA_VERSION + 1,))
    newer = job_sqlite.SCHEMA_VERSION + 1
    with pytest.raises(StoreError, match=f"job store schema version {newer}.*upgrade tickcast"):
        SqliteJobStore(path)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT version FROM jobs_schema").fetchall() == [(newer,)]


def test_reopening_an_up_to_date_file_takes_no_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    SqliteJobStore(path).close()
    with closing(sqlite3.connect(path, isolation_level=None)) as holder:
        holder.execute("BEGIN IMMEDIATE")  # another writer: opening must not wait for it
        jobs = SqliteJobStore(path)
        holder.execute("ROLLBACK")
    jobs.close()


def test_writes_reads_and_counts(database: str) -> None:
    jobs = open_job_store(database)
    try:
        assert jobs.get("0000000000aa") is None and jobs.newest(5) == [] and jobs.by_ids([]) == {}
        jobs.put(record("0000000000aa", created_at=1.0))
        jobs.put(record("0000000000bb", JobStatus.RUNNING, created_at=2.0))
        jobs.put(record("0000000000cc", JobStatus.FAILED, created_at=2.0))
        jobs.put_progress("0000000000bb", {"epoch": 1})
        jobs.put_progress("0000000000cc", {"epoch": 9})  # finished: never overwritten
        got = jobs.get("0000000000bb")
        assert got is not None and got.progress == {"epoch": 1} and got.status is JobStatus.RUNNING
        failed = jobs.get("0000000000cc")
        assert failed is not None and failed.progress is None
        # ties on created_at: the last written first
        assert [r.id for r in jobs.newest(2)] == ["0000000000cc", "0000000000bb"]
        assert set(jobs.by_ids(["0000000000aa", "0000000000ff"])) == {"0000000000aa"}
        assert {r.id for r in jobs.unfinished()} == {"0000000000aa", "0000000000bb"}
        per_status, stored = jobs.counts(["0000000000bb", "0000000000ff"])
        assert per_status == {JobStatus.QUEUED: 1, JobStatus.RUNNING: 1, JobStatus.FAILED: 1}
        assert stored == {"0000000000bb": JobStatus.RUNNING}
        jobs.put(record("0000000000aa", JobStatus.CANCELLED, created_at=2.0))  # a replace, every field
        assert jobs.counts()[0][JobStatus.CANCELLED] == 1
        assert [r.id for r in jobs.newest(3)] == ["0000000000aa", "0000000000cc", "0000000000bb"]
        assert jobs.newest(0) == [] and jobs.counts([]) == (jobs.counts()[0], {})
    finally:
        jobs.close()


def test_records_come_back_as_they_were_written(database: str) -> None:
    """JSON text both ways: nested values, unicode, floats exactly, and a loss that went NaN."""
    full = JobRecord(
        "0123456789ab",
        JobStatus.RUNNING,
        {"exchange": "kraken", "symbol": "ÉTH-USD", "config": {"lr": 1e-05, "big": 1e300}, "start": None},
        {"epoch": 3, "loss": float("nan"), "val": [0.1, 0.30000000000000004]},
        {"model_id": "cnn-1", "activated": False, "warnings": ["few windows"]},
        "an error\nover two lines",
        1712345678.123456,
        1712345679.5,
        None,
    )
    jobs = open_job_store(database)
    try:
        jobs.put(full)
        got = jobs.get(full.id)
        assert got is not None and got.progress is not None
        assert math.isnan(got.progress.pop("loss")) and full.progress is not None
        full.progress.pop("loss")
        assert got == full and type(got.spec["config"]["big"]) is float
    finally:
        jobs.close()


def test_counts_of_the_table_keep_their_strings_and_count_unsaved_records_as_they_are(
    database: str,
) -> None:
    jobs = open_job_store(database)
    try:
        jobs.put(record("0000000000aa"))
        jobs.put(record("0000000000bb", JobStatus.RUNNING))
        table = JobTable(jobs, threading.RLock())
        # its end is known here, the store still says queued
        table.unsaved["0000000000aa"] = record("0000000000aa", JobStatus.SUCCEEDED)
        counts = table.counts()
    finally:
        jobs.close()
    assert counts == {
        "queued": 0,
        "running": 1,
        "succeeded": 1,
        "failed": 0,
        "cancelled": 0,
        "interrupted": 0,
    }
    assert all(type(k) is str for k in counts)


def test_a_locked_file_is_a_job_store_error_and_reads_say_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with SqliteJobStore(path) as jobs:
        jobs.put(record("0000000000aa"))
        holder = sqlite3.connect(path, isolation_level=None, timeout=0)
        holder.execute("BEGIN EXCLUSIVE")
        jobs._db.execute("PRAGMA busy_timeout = 50")  # not the 5 s the service waits: a test
        try:
            with pytest.raises(JobStoreError, match="locked"):
                jobs.put(record("0000000000bb"))
            table = JobTable(jobs, threading.RLock())
            with pytest.raises(StoreUnavailable, match=r"cannot be read right now \(database is locked\)"):
                table.read("0000000000aa")
            with pytest.raises(StoreUnavailable, match="locked"):
                table.counts()
            with pytest.raises(StoreUnavailable, match="the job could not be recorded: the store failed"):
                table.create({"exchange": "synthetic"})
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert [r.id for r in jobs.newest(5)] == ["0000000000aa"]  # nothing half-written


def test_each_store_has_every_method_of_the_protocol(database: str) -> None:
    """mypy checks the signatures (`sqlite._conforms`, `pg._conforms`); this, that nothing is
    missing at run time, and that the opener picks the backend the target names."""
    wanted = {n for n, v in vars(JobStore).items() if not n.startswith("_") and callable(v)}
    assert wanted == {"put", "put_progress", "get", "newest", "unfinished", "by_ids", "counts", "close"}
    store: JobStore = open_job_store(database)  # the typed assignment mypy checks
    try:
        assert type(store) is (PgJobStore if database.startswith("postgresql://") else SqliteJobStore)
        for name in wanted:
            ours, theirs = getattr(type(store), name), getattr(JobStore, name)
            assert list(inspect.signature(ours).parameters) == list(inspect.signature(theirs).parameters)
    finally:
        store.close()


def tables(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as db:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


# ------------------------------------------------------------ PostgreSQL


def pg_tables(url: str) -> set[str]:
    import psycopg

    with psycopg.connect(url) as c:
        q = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        return {r[0] for r in c.execute(q).fetchall()}


def pg_sql(url: str, sql: str, *args: object) -> list[tuple]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        cur = c.execute(sql, args or None)
        return cur.fetchall() if cur.description else []


def test_pg_schema_from_empty_to_newest_then_a_newer_one_is_refused_and_left_alone(pg_url: str) -> None:
    assert pg_tables(pg_url) == set()
    with PgJobStore(pg_url) as jobs:
        assert jobs.schema_version == job_pg.SCHEMA_VERSION == len(job_pg.MIGRATIONS)
        jobs.put(record("0000000000aa"))
    assert pg_tables(pg_url) == {"jobs", "jobs_schema"}  # its own names only
    assert pg_sql(pg_url, "SELECT version FROM jobs_schema") == [(job_pg.SCHEMA_VERSION,)]
    with PgJobStore(pg_url) as again:  # opening an up-to-date database changes nothing
        assert again.get("0000000000aa") == record("0000000000aa")
    newer = job_pg.SCHEMA_VERSION + 1
    pg_sql(pg_url, "UPDATE jobs_schema SET version = %s", newer)
    with pytest.raises(StoreError, match=f"job store schema version {newer}.*upgrade tickcast"):
        PgJobStore(pg_url)
    assert pg_sql(pg_url, "SELECT version FROM jobs_schema") == [(newer,)]
    assert pg_sql(pg_url, "SELECT id FROM jobs") == [("0000000000aa",)]


def test_pg_replicas_opening_together_migrate_once(pg_url: str) -> None:
    stores: list[PgJobStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            stores.append(PgJobStore(pg_url))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(stores) == 4
    assert len({s.owner for s in stores}) == 4  # one owner id per store: per job manager
    assert pg_sql(pg_url, "SELECT version FROM jobs_schema") == [(job_pg.SCHEMA_VERSION,)]
    for s in stores:
        s.close()


def test_pg_a_lost_connection_fails_one_call_then_the_store_reconnects(pg_url: str) -> None:
    with PgJobStore(pg_url) as jobs:
        jobs.put(record("0000000000aa"))
        table = JobTable(jobs, threading.RLock())
        pg_sql(
            pg_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE %s",
            "tickcast-jobs-%",
        )
        with pytest.raises(StoreUnavailable, match="cannot be read right now"):
            table.read("0000000000aa")
        assert jobs.get("0000000000aa") == record("0000000000aa")  # a new connection
        jobs.put(record("0000000000bb"))
        assert {r.id for r in jobs.unfinished()} == {"0000000000aa", "0000000000bb"}


def test_pg_a_locked_table_is_a_job_store_error_and_nothing_is_half_written(pg_url: str) -> None:
    import psycopg

    with PgJobStore(pg_url) as jobs, psycopg.connect(pg_url) as holder:
        jobs.put(record("0000000000aa"))
        assert jobs._conn is not None
        jobs._conn.execute("SET statement_timeout = 200")  # not the 5 s the service waits: a test
        holder.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(JobStoreError, match="statement timeout"):
            jobs.put(record("0000000000bb"))
        table = JobTable(jobs, threading.RLock())
        with pytest.raises(StoreUnavailable, match="the job could not be recorded: the store failed"):
            table.create({"exchange": "synthetic"})
        with pytest.raises(StoreUnavailable, match="statement timeout"):
            table.counts()
        holder.rollback()
        assert [r.id for r in jobs.newest(5)] == ["0000000000aa"]


def test_pg_a_database_that_cannot_be_reached_is_a_job_store_error_without_the_password() -> None:
    url = "postgresql://tickcast:s3cret-pw@127.0.0.1:1/tickcast"
    with pytest.raises(JobStoreError) as caught:
        PgJobStore(url)
    assert "cannot connect to postgresql://tickcast:***@127.0.0.1:1/tickcast" in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)
