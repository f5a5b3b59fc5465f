"""A PostgreSQL database that cannot answer now (its connection dropped by the server, the server
down) is a 503 with a Retry-After that the text repeats, exactly as a locked SQLite store is
(test_storage_errors.py), and the next request works again; the default SQLite app never
loads psycopg to know that.

Each test here names its backend itself, so each runs once (marked sqlite_only, the API tests'
way of not being run on both backends)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from app import pg
from app.api.errors import storage_failure
from app.main import create_app
from app.market.sources import synthetic
from tests.helpers.apps import make_settings
from tests.helpers.bodies import csv_body

IMPORT = "/markets/kraken/ETH-USD/import"
TICKS = "/markets/kraken/ETH-USD/ticks"
CSV = {"content-type": "text/csv"}
ROOT = Path(__file__).resolve().parents[2]


def assert_503(r: httpx.Response, *words: str) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/json"
    detail = r.json()["detail"]
    for w in words:
        assert w in detail, (w, detail)
    said = re.search(r"retry in (\d+) s\.?$", detail)
    assert said is not None, detail
    assert r.headers["retry-after"] == said.group(1)


def drop_tick_store_connection(url: str) -> None:
    """The server ends the tick store's connection, as a restart or a failover would."""
    with psycopg.connect(url, autocommit=True) as c:
        killed = c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE 'tickcast-ticks-%'"
        ).fetchall()
    assert killed, "the app holds no tick store connection"


@pytest.mark.sqlite_only
def test_a_dropped_connection_is_503_for_reads_and_writes_and_the_next_request_works(
    tmp_path: Path, pg_url: str
) -> None:
    ticks = synthetic.generate(200, seed=4)
    # live scoring off: no background reader meets the dropped connection before the request does
    with TestClient(create_app(make_settings(tmp_path, database_url=pg_url, live=False))) as c:
        assert c.post(IMPORT, content=csv_body(ticks[:100]), headers=CSV).json()["new_ticks"] == 100
        drop_tick_store_connection(pg_url)
        assert_503(c.get(TICKS), "the database", "PostgreSQL cannot answer now", "TICKCAST_DATABASE_URL")
        assert c.get(TICKS).json()["count"] == 100  # connected again
        drop_tick_store_connection(pg_url)
        assert_503(c.post(IMPORT, content=csv_body(ticks), headers=CSV), "the database")
        # nothing was half-written: the whole import is new on the retry
        assert c.post(IMPORT, content=csv_body(ticks), headers=CSV).json()["new_ticks"] == 100
        assert c.get(TICKS).json()["count"] == 200


@pytest.mark.sqlite_only
def test_which_postgresql_errors_are_storage_failures(pg_url: str) -> None:
    """Real psycopg errors: a server that is not there is "retry later" (without the password);
    a constraint or a bad statement is a bug and keeps its own answer."""
    with pytest.raises(psycopg.OperationalError) as refused:
        pg.connect("postgresql://tickcast:hunter2-pw@127.0.0.1:1/tickcast", part="test")
    detail, retry = storage_failure(refused.value) or ("", 0)
    assert "PostgreSQL cannot answer now" in detail and detail.endswith(f"retry in {retry} s")
    assert "hunter2-pw" not in detail and "***" in detail
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute("CREATE TABLE u (x int UNIQUE)")
        c.execute("INSERT INTO u VALUES (1)")
        with pytest.raises(psycopg.errors.UniqueViolation) as dup:
            c.execute("INSERT INTO u VALUES (1)")
        with pytest.raises(psycopg.errors.SyntaxError) as bad:
            c.execute("SELEC 1")
    assert storage_failure(dup.value) is None and storage_failure(bad.value) is None


@pytest.mark.sqlite_only
def test_the_sqlite_app_answers_without_loading_psycopg(tmp_path: Path) -> None:
    """Knowing psycopg's errors must not cost the default install an import of psycopg."""
    script = f"""
import sys
from pathlib import Path
from fastapi.testclient import TestClient
from app.main import create_app
from tests.helpers.apps import make_settings
with TestClient(create_app(make_settings(Path({str(tmp_path)!r})))) as c:
    assert c.get("/markets/kraken/ETH-USD/ticks").status_code in (200, 404)
assert "psycopg" not in sys.modules, "psycopg was imported"
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}  # the default: SQLite
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
