"""The connection to Ray: made once per process, on the first job, by a thread that never ends.

Two reasons for the thread. A local Ray (no address) starts its GCS and raylet with
PR_SET_PDEATHSIG, so they die with the *thread* that called `ray.init`: started from a
short-lived thread, the cluster vanished a second later and the driver gave up after 60 s
("Failed to connect to GCS"); started here, it lives as long as the service. And `ray.init`
takes seconds (a local cluster starts processes; a remote one is dialled): done here, a job's
start never blocks the event loop that serves /predict.

Jobs are launched from this thread too, in the order they were started. What a job needs is
checked against the whole cluster first: a task that no node can ever hold would wait forever
with the job shown running; it fails at once instead, saying what is missing.
"""

from __future__ import annotations

import logging
import os
import queue as queue_mod
import threading
from collections.abc import Callable
from typing import Any

import ray

log = logging.getLogger(__name__)


class Cluster:
    """A Ray cluster (`address`; None: a local one of `num_cpus` CPUs in this process) and the
    thread that connects to it and launches jobs on it."""

    def __init__(self, address: str | None, num_cpus: int | None = None) -> None:
        self.address, self.num_cpus = address, num_cpus
        self._todo: queue_mod.Queue[Callable[[], None]] = queue_mod.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._flags: Any = None

    def flags(self) -> Any:
        """The `ray_flag.Flags` actor of this service's jobs, made on first use (on this thread)."""
        from app.services.jobs.ray_flag import new_flags

        if self._flags is None:
            self._flags = new_flags()
        return self._flags

    def where(self) -> str:
        return f"the Ray cluster at {self.address}" if self.address else "the local Ray cluster"

    def run_soon(self, launch: Callable[[], None], fail: Callable[[str], None]) -> None:
        """`launch()` on the cluster's thread once connected, or `fail(reason)` if Ray cannot be
        started or reached (tried again for the next job: a cluster may come back)."""

        def step() -> None:
            try:
                self._connect()
            except Exception as e:
                log.exception("could not connect to %s", self.where())
                fail(f"could not start or reach {self.where()} ({type(e).__name__}: {e})")
                return
            try:
                launch()
            except Exception as e:
                log.exception("could not launch a job on %s", self.where())
                fail(f"could not launch the job on {self.where()} ({type(e).__name__}: {e})")

        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="tickcast-ray", daemon=True)
                self._thread.start()
        self._todo.put(step)

    def _serve(self) -> None:
        while True:
            self._todo.get()()

    def _connect(self) -> None:
        if ray.is_initialized():
            return
        # The workers' output stays in Ray's logs (/tmp/ray/session_latest/logs on each node): Ray
        # Train's helpers there warn every second where the State API is absent (no ray[default]).
        if self.address:
            ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            cpus = self.num_cpus or os.cpu_count() or 1
            ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        log.info("connected to %s: %s", self.where(), ray.cluster_resources())  # type: ignore[no-untyped-call]


def shortfall(cpus: float, gpus: float, what: str) -> str | None:
    """Why the cluster can never run a job that needs `cpus` CPUs and `gpus` GPUs at once (None
    when it can): it would wait for them forever."""
    have = ray.cluster_resources()  # type: ignore[no-untyped-call]
    have_cpus, have_gpus = float(have.get("CPU", 0)), float(have.get("GPU", 0))
    if gpus > have_gpus:
        return (
            f"{what} needs {gpus:g} GPU(s) and the Ray cluster has {have_gpus:g}; ask for device cpu, "
            "or add GPU nodes"
        )
    if cpus > have_cpus:
        return (
            f"{what} needs {cpus:g} CPUs and the Ray cluster has {have_cpus:g}; ask for fewer workers "
            "or threads (TICKCAST_JOB_THREADS), or add nodes"
        )
    return None


def remote(fn: Callable[..., Any]) -> Any:
    """`fn` as a Ray task run in a process of its own (`max_calls=1`: a job changes its process's
    priority, signals and thread caps, which must not outlive it) and never retried (a job whose
    worker died is reported, as a local one is, not run twice behind the service's back)."""
    return ray.remote(max_calls=1, max_retries=0)(fn)
