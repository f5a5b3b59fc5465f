"""Settings and a models folder for a real app over temporary files."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.market.backends import open_tick_store
from app.market.storage import TickStorage
from app.settings import Settings


def make_settings(tmp: Path, **over: object) -> Settings:
    """Everything under `tmp`, on the CPU, quiet: no bootstrap, no ingestion, one job thread."""
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


def settings_for(tmp: Path, url: str, **over: object) -> Settings:
    """An app that ingests binance:BTC-USD from `url` (a FakeExchange) every 0.3 s."""
    kw = {
        "markets": ["binance:BTC-USD"],
        "source_urls": {"binance": url},
        "ingest": True,
        "pull_interval_s": 0.3,
        **over,
    }
    return make_settings(tmp, **kw)


def install_models(tmp: Path, trained: list[Path], activate: bool = True) -> list[str]:
    """Copies the session's trained checkpoints into `tmp`/models; the first one is made
    active unless `activate` is false. Returns their ids."""
    folder = tmp / "models"
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    for p in trained:
        (folder / p.name).write_bytes(p.read_bytes())
        ids.append(p.stem)
    if activate:
        (folder / "ACTIVE").write_text(ids[0])
    return ids


@contextmanager
def app_store(tmp: Path) -> Iterator[TickStorage]:
    """The tick store an app built by `make_settings(tmp)` opens: its SQLite file, or this test's
    PostgreSQL database when TICKCAST_DATABASE_URL names one (the API tests' `backend`)."""
    store = open_tick_store(make_settings(tmp).database())
    try:
        yield store
    finally:
        store.close()
