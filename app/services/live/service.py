"""Live evaluation: every stored tick scored by the active model and its shadows, every outcome kept.

One task does all of it, in order, off the event loop: it wakes when a pull
stored ticks (`notify`) or every `poll_s`, scores each market's new ticks
(`scorer.step`), and every `metrics_s` recomputes the rolling metrics, runs the
promotion policy, prunes the log past its retention and, when due, refits the
active model's calibrator. Doing these one after another in one worker thread
bounds what live evaluation can take from serving to one core at most, and
means no two of them ever race on the log.

Shadows are the named challengers first, then the newest loadable models, up
to `shadow_models`. They are loaded once onto the serving device and kept.

Replicas sharing one PostgreSQL log score one at a time: each poll, a replica
asks the log for the scorer role (`claim_scorer`, an advisory lock there,
always granted on SQLite) and scores, refreshes, promotes, prunes and
recalibrates only while it holds it. The others still choose the shadows (so
that their answers name each model's role) and serve every read from the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from app.market.storage import Position, TickStorage
from app.ml import calibration, checkpoint
from app.services.live import promotion, recalibrate, rolling, scorer
from app.services.live.log import PredictionLog
from app.services.predictor import Predictor
from app.services.registry import Registry, RegistryError, UnknownModel
from app.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveConfig:
    enabled: bool = True
    poll_s: float = 1.0
    metrics_s: float = 10.0
    shadow_models: int = 3
    shadow_ids: tuple[str, ...] = ()
    policy: promotion.Policy = field(default_factory=lambda: promotion.Policy(False, 5_000, 0.95))
    limits: rolling.Limits = field(default_factory=lambda: rolling.Limits(0.5, 0.05))
    recalibrate_s: float = 0.0
    gap_s: float = 300.0
    retention_s: float = 7 * 86_400.0


def live_config(s: Settings) -> LiveConfig:
    return LiveConfig(
        enabled=s.live,
        poll_s=s.live_poll_s,
        metrics_s=s.live_metrics_s,
        shadow_models=s.shadow_models,
        shadow_ids=tuple(s.shadow_ids),
        policy=promotion.Policy(
            s.promotion == "if_better_live", s.promote_min_outcomes, s.promote_confidence
        ),
        limits=rolling.Limits(s.live_auc_floor, s.live_ece_max),
        recalibrate_s=s.recalibrate_s,
        gap_s=s.gap_s,
        retention_s=s.prediction_retention_s,
    )


@dataclass
class LiveStats:
    steps: int = 0
    ticks: int = 0  # ticks read past the positions
    predictions: int = 0  # predictions logged, all models
    errors: int = 0
    last_error: str | None = None
    scoring: bool = False  # this replica held the scorer role at its last poll


class LiveEval:
    def __init__(
        self,
        store: TickStorage,
        log_: PredictionLog,
        predictor: Predictor,
        registry: Registry,
        cfg: LiveConfig,
    ) -> None:
        self.store, self.log, self.predictor, self.registry, self.cfg = store, log_, predictor, registry, cfg
        self.stats = LiveStats()
        self._shadows: dict[str, checkpoint.Model] = {}
        self._shadow_ids: list[str] = []
        # the position each (market, model)'s figures were last computed at
        self._computed_at: dict[tuple[str, str, str], Position] = {}
        self._lock = threading.Lock()  # one step of work at a time (the loop, or a caller such as a test)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._stopping = False
        self._next_refresh = 0.0
        self._next_recalibration = time.monotonic() + cfg.recalibrate_s

    # ------------------------------------------------------------ life

    async def start(self) -> None:
        if not self.cfg.enabled or self._task is not None:
            return
        # one thread of its own, at a lower CPU priority than the event loop's: when the cores are
        # busy, serving /predict comes first and scoring catches up after
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="live", initializer=_lower_priority)
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name="live-eval")

    async def stop(self) -> None:
        """End the loop; a step under way finishes its chunk (the store closes after this)."""
        task, self._task, self._stopping = self._task, None, True
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._pool is not None:
            await asyncio.to_thread(self._pool.shutdown, wait=True)
            self._pool = None

    def notify(self, exchange: str = "", symbol: str = "") -> None:
        """A pull stored ticks: score now rather than at the next poll."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.cfg.poll_s)
            self._wake.clear()
            try:
                await asyncio.get_running_loop().run_in_executor(self._pool, self.work)
            except Exception as e:  # the loop must outlive any one failure (a locked file, a bad model)
                self.stats.errors += 1
                self.stats.last_error = str(e)
                log.exception("live evaluation step failed; retrying at the next poll")

    def work(self) -> None:
        """Score everything new, then refresh the metrics when due (blocking): on the scorer only."""
        with self._lock:
            now = time.monotonic()
            due = now >= self._next_refresh
            if due:
                self._next_refresh = now + self.cfg.metrics_s
                self._choose_shadows()
            if not self._claim():
                if due:
                    self._follow_calibrator()
                return
            while self._score_all() and not self._stopping:
                pass  # a backlog is read chunk by chunk until it is gone
            if due:
                self._refresh()

    def _claim(self) -> bool:
        """Whether this replica scores now; one that does not lets its loaded shadows go."""
        self.stats.scoring = self.log.claim_scorer()
        if not self.stats.scoring:
            self._shadows = {}
        return self.stats.scoring

    def _follow_calibrator(self) -> None:
        """A replica that does not score serves the calibrator the scorer's refit kept: it reads the
        shared log's newest kept version, as a restart would, and swaps it in."""
        model = self.predictor.model
        if model is None:
            return
        try:
            kept = self.log.calibrator(model.id)
        except self.log.errors as e:
            log.warning("live: the kept calibrators could not be read (%s); trying again later", e)
            return
        if kept is not None and kept[0] != model.calibrator_version:
            self.predictor.recalibrate(model.id, calibration.Calibrator.from_dict(kept[1]), kept[0])
            log.info(
                "live: %s now serves calibrator version %d, refitted on another replica", model.id, kept[0]
            )

    # ------------------------------------------------------------ scoring

    def entrants(self) -> list[scorer.Entrant]:
        active = self.predictor.model
        out = [] if active is None else [scorer.Entrant(active, "active")]
        return out + [scorer.Entrant(m, "shadow") for m in self._load_shadows(active)]

    def _score_all(self) -> bool:
        """One step per market; True when some market had a full chunk (more may be waiting)."""
        entrants = self.entrants()
        more = False
        for exchange, symbol in self.store.markets():
            s = scorer.step(self.store, self.log, exchange, symbol, entrants, gap_s=self.cfg.gap_s)
            if s is None:
                continue
            self.stats.steps += 1
            self.stats.ticks += s.ticks
            self.stats.predictions += sum(s.scored.values())
            more = more or s.ticks >= scorer.CHUNK
        return more

    def running_ids(self) -> list[str]:
        """The active model's id and the shadows' as last chosen (nothing is loaded: any thread)."""
        active = self.predictor.model
        return ([] if active is None else [active.id]) + [
            i for i in self._shadow_ids if active is None or i != active.id
        ]

    def challenger_ids(self) -> list[str]:
        """The shadows to score: jobs' if_better_live challengers, then the named ones, then the newest
        loadable models, up to `shadow_models` (the jobs' ones are scored even past it)."""
        active = self.predictor.model
        active_id = None if active is None else active.id
        pinned = [i for i in self.log.pinned() if i != active_id]  # always scored: a job asked for it
        named = [i for i in self.cfg.shadow_ids if i != active_id and i not in pinned]
        try:
            infos = [
                m for m in self.registry.list() if m.loadable and m.id != active_id and m.id not in named
            ]
        except OSError:
            infos = []
        infos.sort(key=lambda m: m.meta.created_at or "", reverse=True)
        infos = [m for m in infos if m.id not in pinned]
        return pinned + (named + [m.id for m in infos])[: max(0, self.cfg.shadow_models - len(pinned))]

    def _load_shadows(self, active: checkpoint.Model | None) -> list[checkpoint.Model]:
        ids = self._shadow_ids
        out = []
        for mid in ids:
            m = self._shadows.get(mid)
            if m is None:
                try:
                    m = self.registry.load(mid, self.predictor.device)
                except (RegistryError, OSError, ValueError) as e:
                    log.warning("shadow %s cannot be loaded: %s", mid, e)
                    if isinstance(e, UnknownModel):  # deleted: a job's challenger stops waiting for it
                        self.log.unpin(mid)
                    continue
                self._shadows[mid] = m
            if scorer.scorable(m) and (active is None or m.id != active.id):
                out.append(m)
        return out

    # ------------------------------------------------------------ metrics, promotion, calibration

    def _choose_shadows(self) -> None:
        self._shadow_ids = self.challenger_ids()
        self._shadows = {k: v for k, v in self._shadows.items() if k in self._shadow_ids}

    def _refresh(self) -> None:
        markets = self.store.markets()
        for e in self.entrants():
            for exchange, symbol in markets:
                # figures change only with new outcomes, which come only as the position moves
                key, pos = (exchange, symbol, e.model.id), self.log.position(exchange, symbol)
                if pos is None or self._computed_at.get(key) == pos:
                    continue
                self._computed_at[key] = pos
                body = rolling.compute(
                    self.log, exchange, symbol, e.model.id, e.model.threshold, self.cfg.limits
                )
                if body["windows"]["last_day"]["count"]:
                    self.log.save_metrics(exchange, symbol, e.model.id, body)
        self._promote(markets)
        self.log.prune(self.cfg.retention_s)
        if self.cfg.recalibrate_s > 0 and time.monotonic() >= self._next_recalibration:
            self._next_recalibration = time.monotonic() + self.cfg.recalibrate_s
            self._recalibrate()

    def refresh(self) -> None:
        """Recompute the rolling metrics and run the promotion policy now (blocking; on the scorer)."""
        with self._lock:
            self._choose_shadows()
            if self._claim():
                self._refresh()

    def _promote(self, markets: list[tuple[str, str]]) -> None:
        active = self.predictor.model
        if active is None:
            return
        pinned = frozenset(self.log.pinned())
        winner = promotion.decide(
            self.log, self.cfg.policy, markets, active.id, list(self._shadow_ids), pinned
        )
        if winner is not None:
            self.predictor.activate(winner)
            self.log.unpin(winner)
            log.info("live promotion: %s replaces %s", winner, active.id)
            self._choose_shadows()

    def pin(self, model_id: str) -> None:
        """A new challenger (a job's model trained with if_better_live): scored in shadow from the next
        step, promoted when the paired test says it is better, whatever TICKCAST_PROMOTION says."""
        self.log.pin(model_id)
        self._next_refresh = 0.0  # choose the shadows again at the next step

    def _recalibrate(self) -> recalibrate.Refit | None:
        model = self.predictor.model
        if model is None:
            return None
        r = recalibrate.refit(self.log, model, self.store.markets())
        if r is not None and r.kept:
            self.predictor.recalibrate(model.id, r.calibrator, r.version)
            log.info("calibrator %d of %s kept: %s", r.version, model.id, r.report)
        return r

    def recalibrate(self) -> recalibrate.Refit | None:
        """Refit the active model's calibrator on its recent live outcomes; serve it if it is better
        (blocking; never beside a scoring step or another refit; None off the scorer)."""
        with self._lock:
            return self._recalibrate() if self._claim() else None

    def calibrator_of(self, model: checkpoint.Model, version: int) -> calibration.Calibrator:
        """The calibrator a logged prediction was served with (0: the checkpoint's own)."""
        if version == 0:
            return checkpoint.calibrator_of(model.meta)
        found = self.log.calibrator(model.id, version)
        if found is None:
            raise LookupError(f"model {model.id} has no calibrator version {version}")
        return calibration.Calibrator.from_dict(found[1])

    def role_of(self, model_id: str) -> str:
        active = self.predictor.model
        if active is not None and active.id == model_id:
            return "active"
        return "shadow" if model_id in self._shadow_ids else "retired"

    def current_metrics(self) -> list[tuple[str, str, str, dict[str, Any]]]:
        """(model, exchange, symbol, stored figures) of the active model and the shadows."""
        return [
            (mid, e, s, body) for e, s, mid, _, body in self.log.metrics() if self.role_of(mid) != "retired"
        ]


NICENESS = 5  # the live thread's niceness above the process's


def _lower_priority() -> None:
    """Linux schedules threads on their own: raise this one's niceness (no privilege needed)."""
    with contextlib.suppress(AttributeError, OSError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + NICENESS)


def kept_calibrators(log_: PredictionLog) -> Callable[[str], tuple[int, calibration.Calibrator] | None]:
    """The predictor's hook: a model's newest calibrator kept by a live refit, if any."""

    def kept(model_id: str) -> tuple[int, calibration.Calibrator] | None:
        found = log_.calibrator(model_id)
        return None if found is None else (found[0], calibration.Calibrator.from_dict(found[1]))

    return kept
