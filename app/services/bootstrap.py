"""First start: no model anywhere, so make one from the synthetic market.

A fresh machine with no network and no configuration should serve real
predictions within a minute: fill the store with synthetic ticks ending now
(if it is empty) and queue a small CNN job that activates its result.
"""

from __future__ import annotations

import logging
import time

from app.market.sources import synthetic
from app.market.store import TickStore
from app.services.jobs import JobManager, JobRecord, JobSpec
from app.services.registry import Registry

log = logging.getLogger(__name__)

BOOTSTRAP_CONFIG = {"arch": "CNN", "num_epochs": 3, "patience": 2, "hidden_size": 32,
                    "num_layers": 2, "seq_len": 32}


def bootstrap(store: TickStore, registry: Registry, jobs: JobManager, n_ticks: int,
              symbol: str = "BTC-USD") -> JobRecord | None:
    """Queue the first model's job when there is no model at all; returns it, or None."""
    exchange = "synthetic"
    if registry.active_id() is not None or registry.list():
        return None
    if store.count(exchange, symbol) == 0:
        ticks = synthetic.generate(n_ticks, seed=0)
        shifted = type(ticks)(ticks.time - ticks.time[-1] + time.time(), ticks.price,
                              ticks.amount, ticks.trade_id, ticks.side)
        added = store.insert(exchange, symbol, shifted)
        log.info("bootstrap: stored %d synthetic ticks for %s:%s", added, exchange, symbol)
    job = jobs.submit(JobSpec(exchange=exchange, symbol=symbol, start=None, end=None,
                              config=dict(BOOTSTRAP_CONFIG), activate="always"))
    log.info("bootstrap: no model yet; training a first one in job %s", job.id)
    return job
