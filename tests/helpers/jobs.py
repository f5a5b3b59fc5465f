"""Small training jobs for a JobManager with real worker processes, and waiting on them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from app.services.jobs.manager import JobManager, JobRecord, JobSpec
from app.services.registry import Registry

SMALL = {"arch": "CNN", "hidden_size": 8, "num_layers": 1, "num_epochs": 1, "seq_len": 16}
# long enough to be caught running mid-epoch (it is cancelled or stopped long before the end)
LONG = {**SMALL, "num_epochs": 50, "patience": 0, "batch_size": 32}


def spec(
    config: dict[str, object] | None = None,
    activate: str = "if_better",
    ticks: int = 3000,
    exchange: str = "synthetic",
) -> JobSpec:
    return JobSpec(exchange, "BTC-USD", None, None, dict(config or SMALL), activate, ticks)


def models(registry: Registry) -> list[str]:
    return sorted(p.stem for p in registry.folder.glob("*.pt"))


async def wait(
    m: JobManager, job_id: str, done: Callable[[JobRecord], bool], timeout: float = 30.0
) -> JobRecord:
    t0 = time.monotonic()
    while True:
        rec = m.get(job_id)
        if done(rec):
            return rec
        assert time.monotonic() - t0 < timeout, f"timed out; last record {rec}"
        await asyncio.sleep(0.05)


def finished(rec: JobRecord) -> bool:
    return rec.status not in ("queued", "running")


def training(rec: JobRecord) -> bool:
    return rec.status == "running" and "batch" in (rec.progress or {})
