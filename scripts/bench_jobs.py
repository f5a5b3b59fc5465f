#!/usr/bin/env python
"""Training jobs through local worker processes and through a local Ray cluster, side by side.

`--jobs` (8) small jobs (a CNN, `--epochs` epochs on `--ticks` synthetic ticks, `activate`
never) are submitted at once to a JobManager with `--concurrency` jobs at a time and
`--threads` torch threads each, as the service runs them: first with local worker processes
(the default backend), then with `ray_spawner` on a Ray cluster started in this process on
the same machine (`--num-cpus` CPUs, default all of them). For each backend:

- `wall_s`: from the submissions to the last job's end;
- `overhead_s` per job: from its start (the manager launched its worker) to its first training
  report (epoch 1 under way): the worker's start, imports and data loading, what the backend
  adds to a job; p50 and max;
- `train_s` per job: the job's own `train_seconds` (fit() alone), p50.

Ray's own start (`ray.init`, once per service process, on its first job) is timed apart
(`ray_start_s`) and not in the Ray figures. The job states are read every 20 ms, so the
overheads are to about 0.1 s (the manager relays a worker's messages every 0.1 s).

    python scripts/bench_jobs.py --backend ray            # ~1-2 minutes on 2 cores
    python scripts/bench_jobs.py --backend ray --json     # ... last line: one JSON object
    python scripts/bench_jobs.py --backend local --jobs 4

With --json the last line is one object: `jobs`, `concurrency`, `threads`, `epochs`, `ticks`,
`cpus`, `ray_start_s` (null without Ray) and under `backends` one object per backend run
(`local`, `ray`): `wall_s`, `overhead_p50_s`, `overhead_max_s`, `train_p50_s`,
`succeeded`, `overheads_s` (per job, in submission order).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.market.store import TickStore
from app.services.jobs.manager import JobManager, JobSpec
from app.services.jobs.process import Spawner
from app.services.jobs.states import Activation
from app.services.registry import Registry

CONFIG = {"arch": "CNN", "hidden_size": 16, "num_layers": 1, "seq_len": 16, "batch_size": 64, "patience": 0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["local", "ray"], default="ray", help="ray: local, then Ray")
    p.add_argument("--jobs", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=2, help="jobs at once (TICKCAST_JOB_CONCURRENCY)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per job (TICKCAST_JOB_THREADS)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--ticks", type=int, default=3000, help="synthetic ticks each job trains on")
    p.add_argument("--num-cpus", type=int, default=os.cpu_count() or 1, help="the local Ray's CPUs")
    p.add_argument("--json", action="store_true", help="end with one JSON line")
    return p.parse_args(argv)


async def run_jobs(args: argparse.Namespace, spawner: Spawner | None) -> dict[str, Any]:
    """Submit `args.jobs` jobs at once to a fresh manager; their timings once all have ended."""
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        store, registry = TickStore(Path(tmp) / "t.db"), Registry(Path(tmp) / "models")
        m = JobManager(store, registry, concurrency=args.concurrency, threads=args.threads, spawner=spawner)
        await m.start()
        config = {**CONFIG, "num_epochs": args.epochs}
        t0 = time.perf_counter()
        ids = [
            m.submit(JobSpec("synthetic", f"B{i}", None, None, config, Activation.NEVER, args.ticks)).id
            for i in range(args.jobs)
        ]
        first: dict[str, float] = {}  # job -> wall time of its first training report
        while True:
            recs = [m.get(i) for i in ids]
            now = time.time()
            for r in recs:
                if r.id not in first and r.progress and "epoch" in r.progress:
                    first[r.id] = now
            if all(r.status not in ("queued", "running") for r in recs):
                break
            await asyncio.sleep(0.02)
        wall = time.perf_counter() - t0
        await m.stop()
        m.close()
        store.close()
    return summary(recs, first, wall)


def summary(recs: list[Any], first: dict[str, float], wall: float) -> dict[str, Any]:
    overheads = [round(first[r.id] - r.started_at, 3) for r in recs if r.id in first and r.started_at]
    trains = [r.result["train_seconds"] for r in recs if r.result and r.result.get("train_seconds")]
    return {
        "wall_s": round(wall, 2),
        "overhead_p50_s": round(statistics.median(overheads), 3) if overheads else None,
        "overhead_max_s": max(overheads) if overheads else None,
        "train_p50_s": round(statistics.median(trains), 3) if trains else None,
        "succeeded": sum(r.status == "succeeded" for r in recs),
        "errors": sorted({r.error for r in recs if r.error}),
        "overheads_s": overheads,
    }


def start_ray(num_cpus: int) -> float:
    """Ray started as the backend starts it on a service's first job; the seconds it took."""
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    return round(time.perf_counter() - t0, 2)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: dict[str, Any] = {k: getattr(args, k) for k in ("jobs", "concurrency", "threads", "epochs", "ticks")}
    out.update(cpus=os.cpu_count(), ray_start_s=None, backends={})
    out["backends"]["local"] = asyncio.run(run_jobs(args, None))
    if args.backend == "ray":
        from app.services.jobs.ray_backend import ray_spawner

        out["ray_start_s"] = start_ray(args.num_cpus)
        out["backends"]["ray"] = asyncio.run(run_jobs(args, ray_spawner(num_cpus=args.num_cpus)))
    print_table(out)
    if args.json:
        print(json.dumps(out))
    return 0 if all(b["succeeded"] == args.jobs for b in out["backends"].values()) else 1


def print_table(out: dict[str, Any]) -> None:
    print(
        f"{out['jobs']} jobs (CNN, {out['epochs']} epochs on {out['ticks']} synthetic ticks), "
        f"{out['concurrency']} at a time, {out['threads']} thread(s) each, {out['cpus']} CPUs"
    )
    if out["ray_start_s"] is not None:
        print(f"Ray start (once per service process, on its first job): {out['ray_start_s']} s")
    print(
        f"{'backend':8} {'wall_s':>8} {'overhead p50':>13} {'overhead max':>13} {'train p50':>10} {'ok':>4}"
    )
    for name, b in out["backends"].items():
        print(
            f"{name:8} {b['wall_s']:8.2f} {b['overhead_p50_s'] or 0:12.2f}s "
            f"{b['overhead_max_s'] or 0:12.2f}s {b['train_p50_s'] or 0:9.2f}s {b['succeeded']:4d}"
        )
        for error in b["errors"]:
            print(f"  {name}: {error}")


if __name__ == "__main__":
    raise SystemExit(main())
