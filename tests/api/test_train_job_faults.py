"""Jobs through the real app under faults: a full queue, a killed API process, the leftovers
of a killed save."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.helpers.apps import make_settings
from tests.helpers.jobs_api import SMALL, seed_store, wait
from tests.helpers.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
LONG = {**SMALL, "num_epochs": 200, "patience": 0, "batch_size": 32}


def test_a_full_queue_answers_429_with_retry_after_and_records_nothing(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path, job_queue_max=1))) as c:
        seed_store(c, 6000)
        running = c.post("/train", json={"config": LONG, "activate": "never"}).json()
        wait(c, running["id"], {"running"})
        queued = c.post("/train", json={"config": SMALL, "activate": "never"})
        assert queued.status_code == 202 and queued.json()["status"] == "queued"
        r = c.post("/train", json={"config": SMALL, "activate": "never"})
        assert r.status_code == 429, r.text
        assert int(r.headers["Retry-After"]) > 0
        assert "TICKCAST_JOB_QUEUE_MAX" in r.json()["detail"]
        assert [j["id"] for j in c.get("/jobs").json()] == [queued.json()["id"], running["id"]]
        assert c.delete(f"/jobs/{queued.json()['id']}").status_code == 200  # a slot frees up
        assert c.post("/train", json={"config": SMALL, "activate": "never"}).status_code == 202
        assert c.delete(f"/jobs/{running['id']}").status_code == 200


# ---------------------------------------------------------------- a real API process


def children(pid: int) -> dict[int, str]:
    """Live (not zombie) processes whose parent is `pid`, with their command lines."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            out[int(entry)] = cmd
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def call(base: str, method: str, path: str, body: bytes | None = None) -> bytes:
    req = urllib.request.Request(
        base + path, data=body, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def test_job_workers_die_with_a_killed_api_process(tmp_path: Path) -> None:
    import json

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
    env.update(
        TICKCAST_STORE_PATH=str(tmp_path / "t.db"),
        TICKCAST_MODELS_DIR=str(tmp_path / "m"),
        TICKCAST_BOOTSTRAP="false",
        TICKCAST_INGEST="false",
        TICKCAST_DEVICE="cpu",
        TICKCAST_LOG_LEVEL="warning",
    )
    api = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    workers: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 60
        while True:
            assert api.poll() is None and time.monotonic() < deadline, "the API did not start"
            try:
                call(base, "GET", "/health")
                break
            except OSError:
                time.sleep(0.2)
        job = json.loads(
            call(base, "POST", "/train", json.dumps({"config": LONG, "activate": "never"}).encode())
        )
        while not (json.loads(call(base, "GET", f"/jobs/{job['id']}")).get("progress") or {}):
            assert time.monotonic() < deadline + 60, "the job never trained"
            time.sleep(0.2)
        workers = {p: c for p, c in children(api.pid).items() if "spawn_main" in c}
        assert workers, children(api.pid)
        for p in workers:  # frozen: it cannot notice anything by itself, only the kernel can end it
            os.kill(p, signal.SIGSTOP)
        api.send_signal(signal.SIGKILL)
        api.wait(10)
        deadline = time.monotonic() + 5
        while any(alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [p for p in workers if alive(p)], "a job worker outlived the API process"
    finally:
        if api.poll() is None:
            api.kill()
            api.wait(10)
        for p in workers:
            if alive(p):
                os.kill(p, signal.SIGKILL)


# ---------------------------------------------------------------- leftovers of a killed save


def killed_during_a_save(target: Path) -> Path:
    """Start an atomic write of `target` in a real process and kill -9 it half-way; returns the
    temporary file it left."""
    code = (
        "import sys, time\nfrom app.atomic import atomic_write\n"
        "with atomic_write(sys.argv[1]) as f:\n"
        "    f.write(b'x' * 3_000_000); f.flush(); print('half', flush=True); time.sleep(60)\n"
    )
    before = set(target.parent.glob(".*.tmp")) if target.parent.exists() else set()
    child = subprocess.Popen([sys.executable, "-c", code, str(target)], cwd=ROOT, stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline().strip() == b"half"
    child.kill()
    child.wait(10)
    (left,) = set(target.parent.glob(".*.tmp")) - before
    assert left.stat().st_size == 3_000_000 and not target.exists()
    return left


@pytest.mark.sqlite_only  # files in the models folder or beside the SQLite file, as only the default has
def test_start_removes_the_temp_files_of_a_killed_save(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    in_models = killed_during_a_save(settings.models_dir / "cnn-20250101-000000-abcdef.pt")
    beside_store = killed_during_a_save(settings.store_path.parent / "export.csv")
    old = time.time() - 60
    for p in (in_models, beside_store):
        os.utime(p, (old, old))  # a while ago: nobody is writing it any more
    fresh = killed_during_a_save(settings.models_dir / "cnn-20250101-000001-abcdef.pt")
    os.utime(fresh)  # now
    with TestClient(create_app(settings)) as c:
        assert not in_models.exists() and not beside_store.exists()
        assert fresh.exists()  # written a moment ago: perhaps by a replica saving right now
        assert c.get("/models").json() == []
