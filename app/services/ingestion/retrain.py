"""Scheduled retraining: one if_better job per configured market, on `retrain_cron`.

A market that cannot be queued (a full queue, a store that cannot record the job, too few
ticks so far) is logged, with what to do, and skipped: the others are still queued.
"""

from __future__ import annotations

import logging

from app.services.jobs.manager import JobManager, JobSpec, QueueFull
from app.services.jobs.manager import StoreUnavailable as JobStoreUnavailable
from app.services.jobs.states import Activation
from app.settings import env_name

log = logging.getLogger("app.services.ingestion.scheduler")  # where these lines have always been logged


def queue_all(jobs: JobManager, markets: list[tuple[str, str]]) -> None:
    for exchange, symbol in markets:
        try:
            jobs.submit(
                JobSpec(
                    exchange=exchange,
                    symbol=symbol,
                    start=None,
                    end=None,
                    config={"arch": "CNN"},
                    activate=Activation.IF_BETTER,
                )
            )
        except QueueFull as e:
            log.warning(
                "scheduled retraining of %s:%s was skipped: %s. Raise %s or wait: the next %s "
                "run queues it again, or POST /train once the queue has room",
                exchange,
                symbol,
                e,
                env_name("job_queue_max"),
                env_name("retrain_cron"),
            )
        except JobStoreUnavailable as e:
            log.warning(
                "scheduled retraining of %s:%s was skipped: %s. The next %s run queues it "
                "again, or POST /train once the store accepts writes",
                exchange,
                symbol,
                e,
                env_name("retrain_cron"),
            )
        except ValueError as e:  # too few ticks so far: the next run finds more
            log.warning(
                "scheduled retraining of %s:%s was skipped: %s. The next %s run tries again",
                exchange,
                symbol,
                e,
                env_name("retrain_cron"),
            )
