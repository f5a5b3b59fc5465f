#!/usr/bin/env python
"""Live evaluation under load: scoring throughput per model, the delay to an outcome, /predict beside it.

Models. The default TickNet (TrainConfig defaults, `--epochs` on `--train-ticks`
synthetic ticks) four times with seeds 0..3 into a models folder; the first is
active, the other three are the shadows the service picks (the newest loadable
models, `shadow_models` = 3). `--models DIR` reuses the models of an earlier
run (it trains into DIR when DIR holds none, and keeps them there).

1. Throughput, in this process on one core (`torch.set_num_threads(1)`; with
   pinning, this process runs on core 1). A backlog of `--backlog` synthetic
   ticks is stored in a fresh SQLite file and scored by `scorer.step` chunk by
   chunk, exactly as the live loop scores a market: each model alone, then all
   four together. A tick counts when it is scored and logged with its outcome
   (the tick `horizon` later is in the backlog). The all-four run also tells
   where the time goes (window features, forward passes, store reads, the log's
   transactions, the rest) and how much the file grows per million predictions
   logged (database + WAL, each measured after a WAL checkpoint).

2. The service, a real uvicorn process (`bench_predict.Server`, pinned to
   core 0 by default) with live scoring on, ingestion and bootstrap off, the same
   models folder. Ticks are written to its SQLite file by this process, as the
   ingest worker process does in a deployment (so the feed costs the API
   process nothing but what live scoring does with it), in batches every 50 ms.
   Nothing wakes live scoring early here: the scheduler's pulls and CSV imports
   do (`on_stored`), a write from another process does not; it finds these
   ticks at its poll, so the delays below include up to one poll.

   - `/predict` at 1 connection (wrk, 100-tick body, as bench_predict.py): idle;
   - rising rates (`--rates`, ticks/s, `--phase-s` each): for every prediction
     of the active model, the delay from the moment the tick that decides its
     outcome was stored (its insert committed) to the `resolved_at` the log
     recorded; p50/p99 per rate. The service finds new ticks by polling every
     `live_poll_s` (the setting; `--poll-s`), so the delay is at least a poll's
     share. A rate is kept up with when its p99 delay and the catch-up after
     the phase both stay within `--keep-up-s` (default: one poll + 1 s);
   - `/predict` at 1 connection again, while ticks arrive at `--live-rate`
     (1,000/s) and are scored by all four models. Target: p99 within 1.5x idle.

Every figure of one run is measured side by side in that run; targets are
verdicts printed beside the figures, not assertions.

    python scripts/bench_live.py                    # ~2-3 minutes; readable lines
    python scripts/bench_live.py --json             # ... last line: one JSON object
    python scripts/bench_live.py --models /tmp/live-models --rates 1000,3000,10000
    python scripts/bench_live.py --quick --no-pin   # seconds: the test's smoke run

With --json the last line is one object: `model`, `shadows`, `threads`,
`pinned`, `poll_s`, `backlog_ticks`, `throughput_per_model_tps` {model id:
ticks/s alone}, `throughput_default_tps` (the active model alone),
`throughput_all_tps` (ticks/s through all four), `predictions_per_s_all`,
`time_share` {phase: fraction of the all-four run}, `bytes_per_million_predictions`,
`delay_by_rate` [{`rate`, `achieved_tps`, `outcomes`, `p50_s`, `p99_s`, `max_s`,
`catch_up_s`, `kept_up`}], `delay_rate` (the rate nearest 1,000/s) with its
`delay_p50_s` and `delay_p99_s`, `max_rate_kept_up` (the highest rate kept up
with, every lower one too; the highest tried is a lower bound), `predict_p50_idle_ms`, `predict_p99_idle_ms`,
`predict_p50_live_ms`, `predict_p99_live_ms`, `predict_p99_ratio`,
`live_feed_tps`, `live_delay_p99_s`, `predict_errors`, and `targets` {name:
{`value`, `target`, `met`}}.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.market.sources import synthetic  # noqa: E402
from app.market.store import TickStore  # noqa: E402
from app.market.ticks import TickArrays  # noqa: E402
from app.ml import checkpoint, features, training  # noqa: E402
from app.ml.config import TrainConfig  # noqa: E402
from app.services.live import scorer  # noqa: E402
from app.services.live.log import PredictionLog, Query  # noqa: E402
from app.services.live.service import LiveConfig, LiveEval  # noqa: E402
from app.services.predictor import Predictor  # noqa: E402
from app.services.registry import Registry  # noqa: E402
from app.settings import Settings  # noqa: E402


def _sibling(name: str) -> ModuleType:
    """Another script of this folder (scripts are no package): its server and wrk helpers are
    reused, not copied."""
    spec = importlib.util.spec_from_file_location(f"tickcast_{name}", Path(__file__).with_name(f"{name}.py"))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load scripts/{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench_predict = _sibling("bench_predict")

EXCHANGE, SYMBOL = "synthetic", "LIVE-BENCH"
TARGETS = {"throughput_default_tps": 20_000.0, "predict_p99_ratio": 1.5}
MODELS = 4  # the active model and three shadows
BATCH_S = 0.05  # the feed stores a batch this often
SEED_TICKS = 200  # the market's history before the service starts (live scoring starts after it)
GAP_S = float(Settings.model_fields["gap_s"].default)
POLL_S = float(Settings.model_fields["live_poll_s"].default)
QUICK = {
    "train_ticks": 2_000,
    "backlog": 3_000,
    "rates": "200,1000",
    "phase_s": 1.0,
    "predict_s": 1,
    "warmup": 0,
    "poll_s": 0.2,
}


# ---------------------------------------------------------------- models


def train_models(folder: Path, n_ticks: int, epochs: int) -> list[str]:
    """The default TickNet, seeds 0..3, on the same synthetic ticks; the first is made active."""
    ticks = synthetic.generate(n_ticks, seed=1)
    ids = []
    for seed in range(MODELS):
        cfg = TrainConfig(num_epochs=epochs, device="cpu", num_threads=1, seed=seed)
        ids.append(training.fit(ticks, cfg).save(folder).stem)
    Registry(folder).activate(ids[0])
    return ids


def prepare_models(args: argparse.Namespace, tmp: Path) -> Path:
    folder = Path(args.models) if args.models else tmp / "models"
    folder.mkdir(parents=True, exist_ok=True)
    reg = Registry(folder)
    if reg.active_id() is None or sum(m.loadable for m in reg.list()) < 2:
        t0 = time.perf_counter()
        ids = train_models(folder, args.train_ticks, args.epochs)
        print(f"trained {', '.join(ids)} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    else:
        print(f"models from {folder}", file=sys.stderr)
    return folder


def entrants_of(folder: Path) -> list[scorer.Entrant]:
    """The active model and the shadows the service would pick, loaded as it loads them."""
    registry = Registry(folder)
    predictor = Predictor(registry, "cpu", threads=1)
    if predictor.load_active() is None:
        raise RuntimeError(f"no loadable active model in {folder}: {predictor.load_error}")
    store, log = TickStore(":memory:"), PredictionLog(":memory:")
    try:
        live = LiveEval(store, log, predictor, registry, LiveConfig(enabled=False, shadow_models=MODELS - 1))
        live.refresh()  # chooses the shadows
        return live.entrants()
    finally:
        log.close()
        store.close()


# ---------------------------------------------------------------- throughput


class PhaseTimer:
    """Seconds spent in each part of a scoring step, by wrapping the calls `scorer.step` makes
    (one call per chunk or forward pass, so the wrapping costs nothing measurable).

    Each wrapped call is charged its own time less that of the wrapped calls inside it, so a
    model's entry point that builds its inputs itself (`Model.logits_ending_at` reading
    `WindowSpec.rows_ending_at`) splits into features and forward, whichever path it takes."""

    PARTS: tuple[tuple[type, tuple[str, ...], str], ...] = (
        (features.WindowSpec, ("windows_ending_at", "rows_ending_at"), "features"),
        (checkpoint.Model, ("logits", "logits_ending_at"), "forward"),
    )

    def __init__(self, store: TickStore, log: PredictionLog) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self._inner: list[float] = []  # per open wrapped call: the time of the wrapped calls inside it
        self._undo: list[tuple[object, str, Any]] = []
        self._targets: list[tuple[object, str, str]] = [
            (owner, name, part) for owner, names, part in self.PARTS for name in names if hasattr(owner, name)
        ]
        self._targets += [(store, "after", "store_read"), (store, "before", "store_read")]
        self._targets.append((log, "record", "log_write"))

    def _wrap(self, owner: object, name: str, part: str) -> None:
        original = getattr(owner, name)
        seconds, inner = self.seconds, self._inner

        def timed(*a: Any, **k: Any) -> Any:
            inner.append(0.0)
            t = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                took = time.perf_counter() - t
                seconds[part] += took - inner.pop()
                if inner:
                    inner[-1] += took

        setattr(owner, name, timed)
        self._undo.append((owner, name, original))

    def __enter__(self) -> PhaseTimer:
        for owner, name, part in self._targets:
            self._wrap(owner, name, part)
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, original in reversed(self._undo):
            if isinstance(owner, type):
                setattr(owner, name, original)
            else:
                delattr(owner, name)  # the instance's wrapper goes; the class's method shows again
        self._undo.clear()


@dataclass
class Backlog:
    ticks: int
    predictions: int
    seconds: float
    phases: dict[str, float]
    growth_bytes: int

    @property
    def tps(self) -> float:
        """Ticks scored and logged per second, per model."""
        return self.ticks / self.seconds


def db_bytes(path: Path) -> int:
    """The file and its WAL, after the WAL is checkpointed into the file (and truncated)."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    db.close()
    wal = Path(f"{path}-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def score_backlog(path: Path, ticks: TickArrays, entrants: list[scorer.Entrant]) -> Backlog:
    """A fresh store holding `ticks`, scored from its first tick to its last as the live loop does."""
    store = TickStore(path)
    store.insert(EXCHANGE, SYMBOL, ticks)
    log = PredictionLog(path)
    try:
        _, seqs = store.after(EXCHANGE, SYMBOL, None, 1, oldest=True)
        # just before the first tick, so that every tick is new to scoring
        log.record(EXCHANGE, SYMBOL, (float(ticks.time[0]), int(seqs[0]) - 1), [], [])
        before = db_bytes(path)
        n_ticks = n_pred = 0
        with PhaseTimer(store, log) as timer:
            t0 = time.perf_counter()
            while (s := scorer.step(store, log, EXCHANGE, SYMBOL, entrants, gap_s=GAP_S)) is not None:
                n_ticks += s.ticks
                n_pred += sum(s.scored.values())
            seconds = time.perf_counter() - t0
        growth = db_bytes(path) - before
    finally:
        log.close()
        store.close()
    phases = dict(timer.seconds)
    phases["other"] = max(0.0, seconds - sum(phases.values()))
    return Backlog(n_ticks, n_pred, seconds, phases, growth)


def throughput(args: argparse.Namespace, tmp: Path, entrants: list[scorer.Entrant]) -> dict[str, Any]:
    """Each model alone, then all of them together, on the same backlog."""
    ticks = synthetic.generate(args.backlog, seed=11)
    alone: dict[str, float] = {}
    for i, e in enumerate(entrants):
        run = score_backlog(tmp / f"alone-{i}.db", ticks, [e])
        alone[e.model.id] = run.tps
        print(f"{e.role} {e.model.id} alone: {run.tps:,.0f} ticks/s", file=sys.stderr)
    both = score_backlog(tmp / "all.db", ticks, entrants)
    print(f"all {len(entrants)} together: {both.tps:,.0f} ticks/s", file=sys.stderr)
    return {
        "backlog_ticks": both.ticks,
        "throughput_per_model_tps": {k: round(v, 1) for k, v in alone.items()},
        "throughput_default_tps": round(alone[entrants[0].model.id], 1),
        "throughput_all_tps": round(both.tps, 1),
        "predictions_per_s_all": round(both.predictions / both.seconds, 1),
        "time_share": {k: round(v / both.seconds, 4) for k, v in both.phases.items()},
        "bytes_per_million_predictions": round(both.growth_bytes / max(both.predictions, 1) * 1e6),
    }


# ---------------------------------------------------------------- the feed


@dataclass
class Phase:
    name: str
    rate: float  # asked, ticks/s
    first: int  # index of its first tick in the feed
    last: int = 0  # one past its last
    seconds: float = 0.0
    catch_up_s: float | None = None  # from its end until live scoring had seen its last tick

    @property
    def achieved_tps(self) -> float:
        return (self.last - self.first) / self.seconds if self.seconds else 0.0


@dataclass
class Feeder:
    """Stores ticks into the service's file on a schedule, noting when each insert committed."""

    store: TickStore
    ticks: TickArrays  # numbered (`with_ordinals`): a batch boundary never merges two trades
    stored_at: np.ndarray = field(init=False)
    next: int = 0

    def __post_init__(self) -> None:
        self.stored_at = np.full(len(self.ticks), np.nan)

    def feed(self, n: int) -> None:
        if self.next + n > len(self.ticks):
            raise RuntimeError("the feed ran out of ticks; generate more")
        self.store.insert(EXCHANGE, SYMBOL, self.ticks[self.next : self.next + n])
        self.stored_at[self.next : self.next + n] = time.time()
        self.next += n

    def run(self, name: str, rate: float, seconds: float, stop: threading.Event | None = None) -> Phase:
        """`rate` ticks/s for `seconds` (or until `stop`), a batch every BATCH_S."""
        batch = max(1, round(rate * BATCH_S))
        interval = batch / rate
        phase = Phase(name, rate, self.next)
        t0 = time.monotonic()
        k = 0
        while k * interval < seconds and not (stop is not None and stop.is_set()):
            wait = t0 + k * interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.feed(batch)
            k += 1
        phase.last, phase.seconds = self.next, time.monotonic() - t0
        return phase

    def newest_seq(self) -> int:
        _, seqs = self.store.after(EXCHANGE, SYMBOL, None, 1)
        return int(seqs[-1])

    def seqs(self) -> np.ndarray:
        """Every fed tick's seq, in the order fed (times never go back, so store order is feed order)."""
        _, seqs = self.store.after(EXCHANGE, SYMBOL, None, self.next, oldest=True)
        return seqs


def wait_caught_up(log: PredictionLog, feeder: Feeder, timeout: float) -> float | None:
    """Seconds until live scoring's position reached the newest stored tick; None: not in time."""
    newest = feeder.newest_seq()
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        pos = log.position(EXCHANGE, SYMBOL)
        if pos is not None and pos[1] >= newest:
            return time.monotonic() - t0
        time.sleep(0.01)
    return None


def delays(
    rows: list[dict[str, Any]], feeder: Feeder, horizon: int, phases: list[Phase]
) -> dict[str, np.ndarray]:
    """Per phase: resolved_at minus when the tick deciding the outcome was stored, in seconds;
    a prediction belongs to the phase that fed that tick."""
    done = [r for r in rows if r["resolved_at"] is not None]
    seq = np.array([r["seq"] for r in done], dtype=np.int64)
    resolved_at = np.array([r["resolved_at"] for r in done], dtype=np.float64)
    seqs = feeder.seqs()
    k = np.searchsorted(seqs, seq)
    if len(k) and not np.array_equal(seqs[np.minimum(k, len(seqs) - 1)], seq):
        raise RuntimeError("a logged prediction names a tick the feed did not store")
    j = k + horizon
    delay = resolved_at - feeder.stored_at[np.minimum(j, len(feeder.stored_at) - 1)]
    return {p.name: delay[(j >= p.first) & (j < p.last)] for p in phases}


# ---------------------------------------------------------------- the service


def service_env(tmp: Path, folder: Path, poll_s: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
    env.update(
        TICKCAST_MODELS_DIR=str(folder),
        TICKCAST_STORE_PATH=str(tmp / "service.db"),
        TICKCAST_BOOTSTRAP="false",
        TICKCAST_INGEST="false",
        TICKCAST_LIVE="true",
        TICKCAST_LIVE_POLL_S=str(poll_s),
        TICKCAST_SHADOW_MODELS=str(MODELS - 1),
        TICKCAST_DEVICE="cpu",
        TICKCAST_LOG_LEVEL="warning",
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass
class ServiceRun:
    idle: Any  # bench_predict.WrkResult
    live: Any
    phases: list[Phase]
    live_phase: Phase
    delay: dict[str, np.ndarray]


def feed_ticks(args: argparse.Namespace, rates: list[float]) -> TickArrays:
    live_s = args.predict_s + args.poll_s + 2 * args.warmup + 2.0
    n = SEED_TICKS + sum(rates) * args.phase_s + args.live_rate * live_s
    return synthetic.generate(int(n * 1.3) + 1_000, seed=21).with_ordinals()


def rising_rates(feeder: Feeder, log: PredictionLog, rates: list[float], seconds: float) -> list[Phase]:
    """Each rate in turn, then until live scoring has seen the last tick fed (the next rate starts
    from no backlog)."""
    phases = []
    for rate in rates:
        p = feeder.run(f"{rate:g}", rate, seconds)
        p.catch_up_s = wait_caught_up(log, feeder, max(30.0, 10 * seconds))
        caught = "never" if p.catch_up_s is None else f"{p.catch_up_s:.2f} s later"
        print(f"fed {p.achieved_tps:,.0f} ticks/s; live scoring caught up {caught}", file=sys.stderr)
        phases.append(p)
    return phases


def predict_while_feeding(
    args: argparse.Namespace, server: Any, lua: Path, feeder: Feeder, pin: str | None
) -> tuple[Any, Phase]:
    """wrk at 1 connection while the feed runs at --live-rate in a thread (live scoring busy)."""
    stop = threading.Event()
    out: list[Phase] = []
    t = threading.Thread(target=lambda: out.append(feeder.run("predict", args.live_rate, 1e9, stop)))
    t.start()
    try:
        time.sleep(args.poll_s + args.warmup)  # a few live steps first: scoring is in its stride
        res = bench_predict.run_wrk(server.url, lua, 1, 1, args.predict_s, pin)
    finally:
        stop.set()
        t.join()
    return res, out[0]


def live_service(
    args: argparse.Namespace,
    tmp: Path,
    folder: Path,
    entrants: list[scorer.Entrant],
    pins: tuple[str | None, str | None],
) -> ServiceRun:
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    feeder = Feeder(TickStore(tmp / "service.db"), feed_ticks(args, rates))
    feeder.feed(SEED_TICKS)  # the market exists, with history, before the service starts
    server = bench_predict.Server(
        "service", "app.main:create_app", service_env(tmp, folder, args.poll_s), tmp / "service.log", pins[0]
    )
    body = bench_predict.make_body(100)
    lua = tmp / "post.lua"
    bench_predict.write_lua(lua, body)
    print("service: starting", file=sys.stderr)
    server.start()
    log: PredictionLog | None = None
    try:
        server.wait_ready(body)
        log = PredictionLog(tmp / "service.db")  # read beside the service, as GET /predictions reads it
        if wait_caught_up(log, feeder, 30.0) is None:  # its first step records where scoring starts
            raise RuntimeError(f"live scoring never started:\n{server.tail()}")
        if args.warmup > 0:
            bench_predict.run_wrk(server.url, lua, 1, 8, args.warmup, pins[1])
        idle = bench_predict.run_wrk(server.url, lua, 1, 1, args.predict_s, pins[1])
        print(f"/predict idle: p99 {idle.p99_ms:.2f} ms", file=sys.stderr)
        phases = rising_rates(feeder, log, rates, args.phase_s)
        live, live_phase = predict_while_feeding(args, server, lua, feeder, pins[1])
        live_phase.catch_up_s = wait_caught_up(log, feeder, 30.0)
        print(
            f"/predict while scoring {live_phase.achieved_tps:,.0f} ticks/s: p99 {live.p99_ms:.2f} ms",
            file=sys.stderr,
        )
        active = entrants[0].model
        rows = log.query(Query(EXCHANGE, SYMBOL, active.id, limit=10**9))
        delay = delays(rows, feeder, active.meta.horizon, [*phases, live_phase])
    finally:
        if log is not None:
            log.close()
        server.stop()
        feeder.store.close()
    return ServiceRun(idle, live, phases, live_phase, delay)


# ---------------------------------------------------------------- report


def _pct(d: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(d, q)), 4) if len(d) else None


def service_figures(run: ServiceRun, keep_up_s: float) -> dict[str, Any]:
    by_rate: list[dict[str, Any]] = []
    for p in run.phases:
        d = run.delay[p.name]
        p99 = _pct(d, 99)
        kept = p99 is not None and p99 <= keep_up_s and p.catch_up_s is not None and p.catch_up_s <= keep_up_s
        by_rate.append(
            {
                "rate": p.rate,
                "achieved_tps": round(p.achieved_tps, 1),
                "outcomes": int(len(d)),
                "p50_s": _pct(d, 50),
                "p99_s": p99,
                "max_s": _pct(d, 100),
                "catch_up_s": None if p.catch_up_s is None else round(p.catch_up_s, 3),
                "kept_up": kept,
            }
        )
    kept_rates = []
    for r in by_rate:  # rising: the highest rate below which every rate was kept up with
        if not r["kept_up"]:
            break
        kept_rates.append(r["rate"])
    at = min(by_rate, key=lambda r: abs(r["rate"] - 1000.0))
    ratio = run.live.p99_ms / run.idle.p99_ms
    return {
        "delay_by_rate": by_rate,
        "delay_rate": at["rate"],
        "delay_p50_s": at["p50_s"],
        "delay_p99_s": at["p99_s"],
        "max_rate_kept_up": kept_rates[-1] if kept_rates else None,
        "predict_p50_idle_ms": round(run.idle.p50_ms, 3),
        "predict_p99_idle_ms": round(run.idle.p99_ms, 3),
        "predict_p50_live_ms": round(run.live.p50_ms, 3),
        "predict_p99_live_ms": round(run.live.p99_ms, 3),
        "predict_p99_ratio": round(ratio, 3),
        "live_feed_tps": round(run.live_phase.achieved_tps, 1),
        "live_delay_p99_s": _pct(run.delay["predict"], 99),
        "predict_errors": run.idle.bad + run.live.bad,
    }


def targets(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    tps, ratio = res["throughput_default_tps"], res["predict_p99_ratio"]
    return {
        "throughput_default_tps": {
            "value": tps,
            "target": TARGETS["throughput_default_tps"],
            "met": tps >= TARGETS["throughput_default_tps"],
        },
        "predict_p99_ratio": {
            "value": ratio,
            "target": TARGETS["predict_p99_ratio"],
            "met": ratio <= TARGETS["predict_p99_ratio"],
        },
    }


def report(res: dict[str, Any]) -> None:
    print(
        f"\nlive evaluation: {res['model']} active, {len(res['shadows'])} shadows; "
        f"{res['threads']} torch thread; "
        + ("service on core 0, this process and wrk on core 1" if res["pinned"] else "unpinned")
    )
    print(f"throughput on a backlog of {res['backlog_ticks']:,} ticks (scored and logged with outcomes):")
    for mid, tps in res["throughput_per_model_tps"].items():
        print(f"  {mid:40} alone {tps:10,.0f} ticks/s")
    together = f"all {len(res['throughput_per_model_tps'])} together"
    print(
        f"  {together:40} {res['throughput_all_tps']:16,.0f} ticks/s"
        f" ({res['predictions_per_s_all']:,.0f} predictions/s)"
    )
    print("  time: " + ", ".join(f"{k} {v:.0%}" for k, v in res["time_share"].items()))
    print(f"  store growth: {res['bytes_per_million_predictions'] / 1e6:,.1f} MB per million predictions")
    print(f"delay from the deciding tick stored to the outcome recorded (live_poll_s {res['poll_s']:g}):")
    print(f"  {'rate/s':>8} {'fed/s':>8} {'outcomes':>9} {'p50':>8} {'p99':>8} {'max':>8} {'catch-up':>9}")
    for r in res["delay_by_rate"]:
        cells = [f"{r[k]:7.3f}s" if r[k] is not None else f"{'-':>8}" for k in ("p50_s", "p99_s", "max_s")]
        catch = f"{r['catch_up_s']:8.3f}s" if r["catch_up_s"] is not None else f"{'never':>9}"
        print(
            f"  {r['rate']:8g} {r['achieved_tps']:8,.0f} {r['outcomes']:9d} {' '.join(cells)} {catch}"
            + ("" if r["kept_up"] else "  fell behind")
        )
    print(f"  highest rate kept up with: {res['max_rate_kept_up']}")
    print(
        f"/predict at 1 connection: p99 idle {res['predict_p99_idle_ms']:.2f} ms, while scoring "
        f"{res['live_feed_tps']:,.0f} ticks/s {res['predict_p99_live_ms']:.2f} ms"
    )
    for name, t in res["targets"].items():
        op = ">=" if name == "throughput_default_tps" else "<="
        print(f"  [{'ok' if t['met'] else 'MISS'}] {name} {t['value']:,.2f} {op} {t['target']:,g}")
    if res["predict_errors"]:
        print(f"  [MISS] the service answered {res['predict_errors']} requests with an error")


# ---------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="a models folder to reuse (trained into, and kept, when it holds none)")
    ap.add_argument("--train-ticks", type=int, default=6_000, help="synthetic ticks each model trains on")
    ap.add_argument("--epochs", type=int, default=1, help="training epochs per model")
    ap.add_argument("--backlog", type=int, default=100_000, help="stored ticks scored for the throughput")
    ap.add_argument(
        "--rates", default="100,300,1000,3000,10000", help="rising feed rates, ticks/s, comma-separated"
    )
    ap.add_argument("--phase-s", type=float, default=6.0, help="seconds of feed at each rate")
    ap.add_argument("--live-rate", type=float, default=1_000.0, help="feed rate while /predict is measured")
    ap.add_argument(
        "--predict-s", type=int, default=6, help="seconds of wrk at 1 connection, idle and live (whole)"
    )
    ap.add_argument(
        "--warmup", type=int, default=1, help="seconds of warm-up before each measurement (whole; 0: none)"
    )
    ap.add_argument("--poll-s", type=float, default=POLL_S, help="the service's live_poll_s")
    ap.add_argument(
        "--keep-up-s",
        type=float,
        default=None,
        help="p99 delay within which a rate is kept up with (default: --poll-s + 1)",
    )
    ap.add_argument(
        "--no-pin", action="store_true", help="do not pin the service to core 0, the rest to core 1"
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes, seconds (a smoke run)")
    ap.add_argument("--json", action="store_true", help="last line: one JSON object")
    return ap


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.quick:  # the quick sizes, unless a flag was given explicitly
        given = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:])}
        for k, v in QUICK.items():
            if "--" + k.replace("_", "-") not in given:
                setattr(args, k, v)
    if args.keep_up_s is None:
        args.keep_up_s = args.poll_s + 1.0
    return args


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    pinned = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    folder = prepare_models(args, tmp)
    torch.set_num_threads(1)
    if pinned:
        os.sched_setaffinity(0, {1})  # this process (throughput, feed) and wrk: core 1
    entrants = entrants_of(folder)
    res: dict[str, Any] = {
        "model": entrants[0].model.id,
        "shadows": [e.model.id for e in entrants[1:]],
        "threads": torch.get_num_threads(),
        "pinned": pinned,
        "poll_s": args.poll_s,
    }
    res |= throughput(args, tmp, entrants)
    pins = ("0", "1") if pinned else (None, None)
    res |= service_figures(live_service(args, tmp, folder, entrants, pins), args.keep_up_s)
    res["targets"] = targets(res)
    return res


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(bench_predict.WRK).exists():
        print("wrk not found (apt-get install wrk)", file=sys.stderr)
        return 2

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so that the finally blocks stop the server

    signal.signal(signal.SIGTERM, on_term)
    tmp = Path(tempfile.mkdtemp(prefix="tickcast-bench-live-"))
    try:
        res = run(args, tmp)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, sqlite3.Error) as e:  # OSError: urllib's errors, a refused connection
        print(f"bench_live: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(res)
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
