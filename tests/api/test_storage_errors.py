"""Storage failures are 503 with the reason and a matching Retry-After, never a bare 500, and
leave nothing half-written. The store and the models folder really refuse the writes: a second
SQLite connection holds the write lock, or the files are made immutable (tests run as root,
for whom permission bits do not stop a write; `chattr +i` does)."""

from __future__ import annotations

import errno
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.api.errors import storage_failure
from app.main import create_app
from app.market.sources import synthetic
from tests.helpers.apps import install_models, make_settings
from tests.helpers.bodies import body, csv_body

IMPORT = "/markets/kraken/ETH-USD/import"
CSV = {"content-type": "text/csv"}

# what only a SQLite file has (its locks, its permissions); on PostgreSQL: test_pg_storage_errors.py
pytestmark = pytest.mark.sqlite_only


def assert_503(r: httpx.Response, *words: str) -> None:
    """503, JSON, naming what failed, with a Retry-After that the text repeats."""
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/json"
    detail = r.json()["detail"]
    for w in words:
        assert w in detail, (w, detail)
    said = re.search(r"retry in (\d+) s\.?$", detail, re.IGNORECASE)
    assert said is not None, detail
    assert r.headers["retry-after"] == said.group(1)


@contextmanager
def store_locked(db: Path) -> Iterator[None]:
    """Another connection holds the store's write lock, as a long transaction elsewhere would."""
    other = sqlite3.connect(db, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


@contextmanager
def unwritable(*paths: Path) -> Iterator[None]:
    """The paths refuse every write, root's included: immutable for root, read-only otherwise."""
    if os.geteuid() != 0:
        modes = [p.stat().st_mode for p in paths]
        for p in paths:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p, m in zip(paths, modes, strict=True):
                p.chmod(m)
        return
    done: list[Path] = []
    try:
        for p in paths:
            if (
                shutil.which("chattr") is None
                or subprocess.run(["chattr", "+i", str(p)], capture_output=True).returncode != 0
            ):
                pytest.skip(
                    "running as root, and `chattr +i` does not work here (it needs "
                    "CAP_LINUX_IMMUTABLE and ext4, xfs or btrfs): nothing else stops root writing"
                )
            done.append(p)
        yield
    finally:
        for p in done:
            subprocess.run(["chattr", "-i", str(p)], check=True)


def test_a_locked_store_is_503_for_import_and_train_and_nothing_is_half_written(tmp_path: Path) -> None:
    ticks = synthetic.generate(200, seed=4)
    db = tmp_path / "db" / "tickcast.db"
    with TestClient(create_app(make_settings(tmp_path))) as c:
        assert c.post(IMPORT, content=csv_body(ticks[:100]), headers=CSV).json()["new_ticks"] == 100
        with store_locked(db):  # the store waits out its busy timeout, then gives up
            assert_503(c.post(IMPORT, content=csv_body(ticks), headers=CSV), "tick store", "locked")
            assert_503(c.post("/train", json={"config": {"num_epochs": 1}, "activate": "never"}), "locked")
            # reads go on meanwhile
            assert c.get("/markets/kraken/ETH-USD/ticks").json()["count"] == 100
        assert c.get("/markets/kraken/ETH-USD/ticks").json()["count"] == 100
        assert c.get("/jobs").json() == []  # no job half-recorded
        # the lock gone, the same requests succeed
        assert c.post(IMPORT, content=csv_body(ticks), headers=CSV).json()["new_ticks"] == 100


def test_an_unwritable_store_is_503_and_recovers(tmp_path: Path) -> None:
    ticks = synthetic.generate(200, seed=4)
    db = tmp_path / "db" / "tickcast.db"
    with TestClient(create_app(make_settings(tmp_path))) as c:
        assert c.post(IMPORT, content=csv_body(ticks[:100]), headers=CSV).json()["new_ticks"] == 100
        # the database and its write-ahead log (SQLite maps the -shm index into memory: left alone)
        with unwritable(db, Path(f"{db}-wal")):
            assert_503(
                c.post(IMPORT, content=csv_body(ticks), headers=CSV), "tick store", "TICKCAST_STORE_PATH"
            )
        assert c.get("/markets/kraken/ETH-USD/ticks").json()["count"] == 100
        assert c.post(IMPORT, content=csv_body(ticks), headers=CSV).json()["new_ticks"] == 100


def test_an_unwritable_models_folder_is_503_for_activate_and_delete(tmp_path: Path, trained, ticks) -> None:
    ids = install_models(tmp_path, trained)
    folder = tmp_path / "models"
    with TestClient(create_app(make_settings(tmp_path))) as c:
        with unwritable(folder):
            assert_503(c.post(f"/models/{ids[1]}/activate"), "models folder", "TICKCAST_MODELS_DIR")
            assert_503(c.delete(f"/models/{ids[1]}"), "models folder", "TICKCAST_MODELS_DIR")
            assert sorted(os.listdir(folder)) == sorted(["ACTIVE", *(f"{i}.pt" for i in ids)])
        # nothing changed: ACTIVE, the served model, the files
        assert (folder / "ACTIVE").read_text().strip() == ids[0]
        assert [m["id"] for m in c.get("/models").json() if m["active"]] == [ids[0]]
        assert c.post("/predict", json=body(ticks)).json()["model_id"] == ids[0]
        # writable again: both work
        r = c.post(f"/models/{ids[1]}/activate")
        assert r.status_code == 200 and r.json()["active"]
        assert c.post(f"/models/{ids[0]}/activate").status_code == 200
        assert c.delete(f"/models/{ids[1]}").status_code == 204


def test_anything_else_unexpected_is_a_json_500_and_still_raised_for_the_log(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path))

    async def broken() -> None:
        raise RuntimeError("a bug")

    async def missing_file() -> None:
        open(tmp_path / "nowhere" / "x")

    app.add_api_route("/broken", broken)
    app.add_api_route("/missing", missing_file)
    with TestClient(app, raise_server_exceptions=False) as c:
        for path in ("/broken", "/missing"):
            r = c.get(path)
            assert r.status_code == 500 and r.headers["content-type"] == "application/json"
            assert "logged" in r.json()["detail"]
    with TestClient(app) as c, pytest.raises(RuntimeError, match="a bug"):
        c.get("/broken")  # the server sees the exception, and logs its traceback


def test_which_errors_are_storage_failures(tmp_path: Path) -> None:
    """Real errors, as the store and the file writes raise them."""
    with pytest.raises(OSError) as full, open("/dev/full", "wb") as f:
        f.write(b"x")
        f.flush()
    assert full.value.errno == errno.ENOSPC
    detail, retry = storage_failure(full.value) or ("", 0)
    assert "disk full" in detail and detail.endswith(f"retry in {retry} s")

    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (x)")
    db.execute("PRAGMA max_page_count = 2")
    with pytest.raises(sqlite3.OperationalError) as no_room:
        db.executemany("INSERT INTO t VALUES (?)", ((b"x" * 4096,) for _ in range(10)))
    assert "full" in (storage_failure(no_room.value) or ("",))[0]

    (path := tmp_path / "ro.db").touch()
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
    ro = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as read_only:
        ro.execute("INSERT INTO t VALUES (1)")
    assert "not writable" in (storage_failure(read_only.value) or ("",))[0]

    # not storage trouble: a bug or a missing file keeps its own answer
    with pytest.raises(sqlite3.IntegrityError) as dup:
        db2 = sqlite3.connect(":memory:")
        db2.execute("CREATE TABLE u (x UNIQUE)")
        db2.executemany("INSERT INTO u VALUES (?)", [(1,), (1,)])
    assert storage_failure(dup.value) is None
    with pytest.raises(FileNotFoundError) as gone:
        (tmp_path / "nope").read_bytes()
    assert storage_failure(gone.value) is None
