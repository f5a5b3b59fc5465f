"""Real apps over real files: a tiny trained model in a temporary models folder."""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.main import create_app
from app.market.sources import synthetic
from app.market.ticks import TickArrays, write_csv_to
from app.ml import training
from app.settings import Settings

TINY = {
    "arch": "CNN",
    "hidden_size": 8,
    "num_layers": 1,
    "num_epochs": 1,
    "batch_size": 256,
    "seq_len": 16,
    "patience": 0,
}


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ticks() -> TickArrays:
    return synthetic.generate(4000, seed=3)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, ticks: TickArrays) -> list[Path]:
    """Two small models (different seeds), saved once for the whole session."""
    folder = tmp_path_factory.mktemp("trained")
    paths = []
    for seed in (0, 1):
        res = training.fit(ticks, training.TrainConfig(**TINY, seed=seed, device="cpu"))
        paths.append(res.save(folder))
    return paths


def make_settings(tmp: Path, **over: object) -> Settings:
    base = dict(
        store_path=tmp / "db" / "tickcast.db",
        models_dir=tmp / "models",
        bootstrap=False,
        device="cpu",
        batch_window_ms=1.0,
        job_threads=1,
        ingest=False,
    )
    base.update(over)
    return Settings(**base)  # type: ignore[arg-type]


def install_models(tmp: Path, trained: list[Path], activate: bool = True) -> list[str]:
    folder = tmp / "models"
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    for p in trained:
        (folder / p.name).write_bytes(p.read_bytes())
        ids.append(p.stem)
    if activate:
        (folder / "ACTIVE").write_text(ids[0])
    return ids


@pytest.fixture
def client(tmp_path: Path, trained: list[Path]) -> Iterator[TestClient]:
    install_models(tmp_path, trained)
    with TestClient(create_app(make_settings(tmp_path))) as c:
        yield c


def body(ticks: TickArrays, n: int = 40, **extra: object) -> dict:
    t = ticks[len(ticks) - n :]
    return {
        "ticks": [
            {"time": float(a), "price": float(b), "amount": float(c)}
            for a, b, c in zip(t.time, t.price, t.amount, strict=True)
        ],
        **extra,
    }


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """The app under uvicorn on a free 127.0.0.1 port, in a thread: the real server, for what
    TestClient cannot do (streams that never end, a browser)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=10)
    )
    loops: list[asyncio.AbstractEventLoop] = []

    async def serve() -> None:
        loops.append(asyncio.get_running_loop())
        await server.serve()

    th = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    th.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert th.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        # what SIGTERM does in `tickcast serve` (signals reach only the main thread)
        loops[0].call_soon_threadsafe(app.state.feeds.close)
        server.should_exit = True
        th.join(20)


def wait_for(pred: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    """Whether a server started in another process answers /health yet."""
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def csv_body(ticks: TickArrays) -> bytes:
    """Ticks as the CSV body POST /markets/.../import takes."""
    buf = io.StringIO()
    write_csv_to(ticks, buf)
    return buf.getvalue().encode()
