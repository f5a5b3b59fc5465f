"""`tickcast serve` as a real process: a busy port, Ctrl-C and SIGTERM mid-pull.

Each test starts `python -m app.cli serve` in its own session (process group), as a
terminal would, with its store in a temporary folder and no bootstrap.
"""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers.servers import answers, free_port

ROOT = Path(__file__).resolve().parents[1]


def serve(tmp: Path, port: int, **env: str) -> subprocess.Popen:
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("TICKCAST_")}
    base.update(
        PYTHONPATH=str(ROOT),
        TICKCAST_PORT=str(port),
        TICKCAST_BOOTSTRAP="false",
        TICKCAST_STORE_PATH=str(tmp / "db" / "tickcast.db"),
        TICKCAST_MODELS_DIR=str(tmp / "models"),
        TICKCAST_DEVICE="cpu",
        **env,
    )
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve"],
        env=base,
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_busy_port_exits_2_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as other:  # another process's server on the port
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        proc = serve(tmp_path, port, TICKCAST_MARKETS="binance:BTC-USD", TICKCAST_INGEST="true")
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    assert out.strip() == (
        f"error: port {port} on 127.0.0.1 is in use (another tickcast?); set "
        "TICKCAST_PORT or stop the other process"
    )
    assert not (tmp_path / "db").exists()  # the lifespan never ran: no store, no ingestion


@contextmanager
def slow_exchange() -> Iterator[tuple[str, threading.Event]]:
    """An exchange whose every request hangs until the test ends: a pull stays in flight."""
    arrived, release = threading.Event(), threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            arrived.set()
            release.wait(60)
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", arrived
    finally:
        release.set()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("sig", "whole_group"),
    [
        (signal.SIGINT, True),  # Ctrl-C in a terminal: the whole foreground process group
        (signal.SIGTERM, False),  # kill, docker stop: the server process only
        (signal.SIGTERM, True),  # systemd's stop: every process of the service
    ],
)
def test_a_signal_during_a_pull_stops_cleanly(tmp_path: Path, sig: signal.Signals, whole_group: bool) -> None:
    port = free_port()
    with slow_exchange() as (url, arrived):
        proc = serve(
            tmp_path,
            port,
            TICKCAST_MARKETS='["binance:BTC-USD"]',
            TICKCAST_INGEST="true",
            TICKCAST_SOURCE_URLS=f'{{"binance": "{url}"}}',
        )
        try:
            assert arrived.wait(120), "no pull reached the exchange"
            assert answers(f"http://127.0.0.1:{port}")
            if whole_group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode in (0, -signal.SIGTERM), out
    for noise in ("Traceback", "CancelledError", "KeyboardInterrupt", "ERROR", "died"):
        assert noise not in out, out
    assert f"Uvicorn running on http://127.0.0.1:{port}" in out  # said once the socket it was given served
    assert "Application shutdown complete" in out
    deadline = time.monotonic() + 10  # the ingest worker went with it
    while not group_gone(proc.pid):
        assert time.monotonic() < deadline, "a worker outlived the service"
        time.sleep(0.1)
