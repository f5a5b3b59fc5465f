"""First start: no model anywhere, so make one from the synthetic market.

A fresh machine with no network and no configuration should serve real
predictions within a minute: the store is filled with the live synthetic
market's history up to now (by the ingestor, so later pulls continue the
same path) and a small CNN job is queued that activates its result.
"""

from __future__ import annotations

import logging

from app.services.jobs import JobManager, JobRecord, JobSpec
from app.services.registry import Registry

log = logging.getLogger(__name__)

BOOTSTRAP_CONFIG = {"arch": "CNN", "num_epochs": 3, "patience": 2, "hidden_size": 32,
                    "num_layers": 2, "seq_len": 32}
SYNTHETIC_SECONDS_PER_TICK = 4.66  # the synthetic market's mean gap, as on the Bitstamp file


def needed(registry: Registry) -> bool:
    """No model at all: neither an active one nor any loadable one in the folder to activate.

    An ACTIVE naming an unloadable model is an operator's choice to fix (/ready says how), not a
    first start: training would silently replace it."""
    return registry.active_id() is None and not any(m.loadable for m in registry.list())


def queue_first_job(jobs: JobManager, symbol: str) -> JobRecord:
    job = jobs.submit(JobSpec(exchange="synthetic", symbol=symbol, start=None, end=None,
                              config=dict(BOOTSTRAP_CONFIG), activate="always"))
    log.info("bootstrap: no model yet; training a first one in job %s", job.id)
    return job
