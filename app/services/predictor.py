"""The active model on the device, serving concurrent requests in micro-batches.

`predict()` validates the ticks and computes the feature window in the
caller's task (the same `features.last_window` training used), resolves the
model object it will be scored by, and queues (model, window). One batcher task
takes the first queued request, collects more until `window_ms` after that
request was queued or until `max_batch` windows, and runs one forward pass per
model in the batch. A lone request therefore waits at most the window.
With `adaptive` (the default) the batcher waits only for as many windows as
the previous batch held: at one request at a time it never waits (latency is
the forward pass), under load batches form from what queues up while a pass
runs and the window lets them fill to the recent level of concurrency.

Activation swaps one reference. Every request captured its model object when
it was queued, so a swap never fails or mixes a request in flight: requests
queued before it are scored by the old model, later ones by the new.

A `Prediction` (and `prediction_json`, its JSON everywhere) is defined in
`app.services.prediction` and exported here with the predictor that makes it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from app.market.ticks import TickArrays, validate
from app.ml import calibration, checkpoint, features
from app.services.no_model import NoModel, NoModelReason, Remedy
from app.services.prediction import Freshness, NotEnoughTicks, Prediction, ProvenanceCache, prediction_json
from app.services.registry import Registry, UnloadableModel

__all__ = [
    "Freshness",
    "NoModel",
    "NoModelReason",
    "NotEnoughTicks",
    "Prediction",
    "Predictor",
    "Remedy",
    "prediction_json",
]

log = logging.getLogger(__name__)


@dataclass
class PredictorStats:
    requests: int = 0  # predict() / predict_many() calls answered
    predictions: int = 0  # windows scored
    batches: int = 0  # forward passes
    errors: int = 0  # forward passes that raised
    batch_sizes: Counter[int] = field(default_factory=Counter)  # windows per forward pass


@dataclass(eq=False)
class _Item:
    model: checkpoint.Model
    windows: np.ndarray  # (k, L, F)
    queued_at: float  # loop time
    future: asyncio.Future[np.ndarray]


class Predictor:
    def __init__(
        self,
        registry: Registry,
        device: str = "auto",
        *,
        window_ms: float = 2.0,
        max_batch: int = 64,
        threads: int | None = None,
        cache_size: int = 3,
        adaptive: bool = True,
        on_batch: Callable[[int], None] | None = None,
        kept_calibrator: Callable[[str], tuple[int, calibration.Calibrator] | None] | None = None,
    ) -> None:
        """`kept_calibrator(model_id)`: the newest calibrator kept by a live refit, which a model
        serves with whenever it is loaded as the active one (None: its file's)."""
        if window_ms < 0 or max_batch < 1 or cache_size < 0:
            raise ValueError("window_ms must be >= 0, max_batch >= 1 and cache_size >= 0")
        self.registry = registry
        self.device = checkpoint.best_device(device)
        self.window_s = window_ms / 1000.0
        self.max_batch = max_batch
        self.cache_size = cache_size
        self.adaptive = adaptive
        self._target = max_batch  # windows the batcher waits for (adaptive: the last batch's size)
        if threads:
            torch.set_num_threads(threads)
        self.stats = PredictorStats()
        self.on_batch = on_batch  # called with each forward pass's size
        self.kept_calibrator = kept_calibrator
        self.load_error: str | None = None  # why the active model could not be loaded, if so
        # set at first start while the first model trains (or after its training failed)
        self.training_hint: NoModelReason | None = None
        self._model: checkpoint.Model | None = None
        self._cache: OrderedDict[str, checkpoint.Model] = OrderedDict()
        self._provenance = ProvenanceCache()  # each model's age and data range, read once
        self._lock = threading.Lock()  # activation and the cache may be used from threads
        self._pending: deque[_Item] = deque()
        self._n_pending = 0
        self._wake: asyncio.Future[None] | None = None
        self._full: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_n = 1

    # ------------------------------------------------------------ models

    @property
    def model(self) -> checkpoint.Model | None:
        return self._model

    def load_active(self) -> checkpoint.Model | None:
        """Load the registry's active model onto the device; None (and `load_error`) if none.

        Never raises: a bad ACTIVE must leave the service up, answering 503 with the reason
        until another model is activated."""
        mid = self.registry.active_id()
        if mid is None:
            return None
        try:
            model = self.registry.load(mid, self.device)
        except Exception as e:
            cause = e.__cause__ if isinstance(e, UnloadableModel) and e.__cause__ is not None else e
            self.load_error = f"the active model {mid!r} cannot be loaded: {cause}"
            log.error(
                "%s; activate another with POST /models/{id}/activate (GET /models shows which can "
                "be loaded) or train one with POST /train",
                self.load_error,
            )
            return None
        self._model, self.load_error = self._with_kept_calibrator(model), None
        return self._model

    def activate(self, model_id: str) -> checkpoint.Model:
        """Load `model_id`, mark it active in the registry, then swap it in (blocking: call it
        from a thread in async code). A model that fails to load changes nothing."""
        model = self._with_kept_calibrator(self.registry.load(model_id, self.device))
        with self._lock:  # ACTIVE and the reference change together; the last caller wins
            self.registry.activate(model_id)
            self._model, self.load_error = model, None
            self._cache.pop(model_id, None)
        return model

    def follow(self, model_id: str | None = None) -> None:
        """Serve what the registry calls active now, chosen on another replica (`model_id` is a hint:
        the registry is read again, so notifications lost or out of order end on the last choice).
        Loaded before the swap: the old model serves until then, and on if the new one fails."""
        current = self._model
        if current is None or current.id != self.registry.active_id():
            self.load_active()

    def _with_kept_calibrator(self, model: checkpoint.Model) -> checkpoint.Model:
        try:
            kept = None if self.kept_calibrator is None else self.kept_calibrator(model.id)
        except Exception as e:  # an unreadable log must not stop a model from serving
            log.warning("%s: its live calibrator could not be read (%s); serving its file's", model.id, e)
            kept = None
        if kept is None:
            return model
        return dataclasses.replace(model, calibrator=kept[1], calibrator_version=kept[0])

    def recalibrate(self, model_id: str, calibrator: calibration.Calibrator, version: int) -> bool:
        """Serve the active model with another calibrator (a live refit), weights untouched; False
        when `model_id` is no longer the active model. A swap of one reference, as activation."""
        with self._lock:
            model = self._model
            if model is None or model.id != model_id:
                return False
            self._model = dataclasses.replace(model, calibrator=calibrator, calibrator_version=version)
            return True

    def no_model_reason(self) -> NoModelReason:
        if self.load_error:  # the cause first: an operator must act, waiting will not help
            return NoModelReason(f"no model is loaded: {self.load_error}", Remedy.ACTIVATE_ANOTHER)
        if self.training_hint:
            hint = self.training_hint
            return NoModelReason(f"no model is loaded yet: {hint.text}", hint.remedy)
        return NoModelReason("no model is loaded yet: one may be training", Remedy.CHECK_JOBS)

    async def seq_len(self, model_id: str | None = None) -> int:
        """The sequence length of the model a request would use (NoModel/UnknownModel if none)."""
        return (await self._resolve(model_id)).seq_len

    async def spec(self, model_id: str | None = None) -> features.WindowSpec:
        """How the model a request would use reads ticks (NoModel/UnknownModel if none)."""
        return (await self._resolve(model_id)).spec

    def forget(self, model_id: str) -> None:
        """Drop a cached explicitly-requested model (call after deleting it)."""
        with self._lock:
            self._cache.pop(model_id, None)

    def _cached(self, model_id: str) -> checkpoint.Model | None:
        active = self._model
        if active is not None and active.id == model_id:
            return active
        with self._lock:
            m = self._cache.get(model_id)
            if m is not None:
                self._cache.move_to_end(model_id)
            return m

    async def _resolve(self, model_id: str | None) -> checkpoint.Model:
        if model_id is None:
            m = self._model
            if m is None:
                raise NoModel(self.no_model_reason())
            return m
        m = self._cached(model_id)
        if m is not None:
            return m
        self.registry.path(model_id)  # InvalidModelId before any thread is used
        m = await asyncio.to_thread(self.registry.load, model_id, self.device)
        if self.cache_size:
            with self._lock:
                self._cache[model_id] = m
                self._cache.move_to_end(model_id)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return m

    @staticmethod
    def _window(model: checkpoint.Model, ticks: TickArrays, index: int | None = None) -> np.ndarray:
        if not _plainly_valid(ticks):
            validate(ticks)  # raises TickError naming the first bad row
        need = model.spec.min_ticks
        if len(ticks) < need:
            raise NotEnoughTicks(need, len(ticks), index)
        if model.spec.first_full(ticks) >= len(ticks):  # an event model: too few distinct times
            raise NotEnoughTicks(need, 1 + int(np.count_nonzero(np.diff(ticks.time))), index, events=True)
        return model.spec.last_window(ticks)

    # ------------------------------------------------------------ requests

    async def predict(self, ticks: TickArrays, model_id: str | None = None) -> Prediction:
        model = await self._resolve(model_id)
        window = self._window(model, ticks)
        p = await self._submit(model, window[None])
        self.stats.requests += 1
        return self._prediction(model, float(p[0]), float(ticks.time[-1]))

    async def predict_many(self, windows: list[TickArrays], model_id: str | None = None) -> list[Prediction]:
        """One prediction per tick series, all by the same model; scored in as few passes as
        `max_batch` allows."""
        if not windows:
            return []
        model = await self._resolve(model_id)
        x = np.stack([self._window(model, t, i) for i, t in enumerate(windows)])
        parts = [self._submit(model, x[i : i + self.max_batch]) for i in range(0, len(x), self.max_batch)]
        p = np.concatenate(await asyncio.gather(*parts))
        self.stats.requests += 1
        return [self._prediction(model, float(p[i]), float(t.time[-1])) for i, t in enumerate(windows)]

    async def predict_each(
        self, ticks: TickArrays, first: int, model_id: str | None = None
    ) -> list[Prediction]:
        """What `predict(ticks[:i + 1])` answers, for each i from `first` on (from the model's
        sequence length on, if later): one feature pass over the series, for a feed of ticks."""
        model = await self._resolve(model_id)
        if not _plainly_valid(ticks):
            validate(ticks)
        first = max(first, model.spec.first_full(ticks))
        if first >= len(ticks):
            return []
        x = model.spec.windows_ending_at(ticks, first)
        parts = [self._submit(model, x[i : i + self.max_batch]) for i in range(0, len(x), self.max_batch)]
        p = np.concatenate(await asyncio.gather(*parts))
        self.stats.requests += 1
        t = ticks.time.tolist()
        return [self._prediction(model, float(p[k]), t[first + k]) for k in range(len(x))]

    def _prediction(self, model: checkpoint.Model, p: float, as_of: float) -> Prediction:
        thr, made, version = model.threshold, self._provenance.of(model), model.calibrator_version
        age = made.age(time.time())  # the answer's, so it grows while the model serves
        return Prediction(p, p >= thr, thr, model.id, as_of, version, age, made.train_start, made.train_end)

    async def _submit(self, model: checkpoint.Model, x: np.ndarray) -> np.ndarray:
        if self._task is None or self._task.done():
            await self.start()
        loop = asyncio.get_running_loop()
        item = _Item(model, x, loop.time(), loop.create_future())
        self._pending.append(item)
        self._n_pending += len(x)
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        if self._full is not None and not self._full.done() and self._n_pending >= self._target:
            self._full.set_result(None)
        return await item.future

    # ------------------------------------------------------------ batcher

    async def start(self) -> None:
        if self._task is not None and not self._task.done():
            return
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name="predictor-batcher")

    async def stop(self) -> None:
        """Finish what is queued, then end the batcher."""
        task, self._stopping = self._task, True
        for f in (self._wake, self._full):
            if f is not None and not f.done():
                f.set_result(None)
        if task is not None:
            await task
        self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._stopping:
                    return
                self._wake = loop.create_future()
                await self._wake
                self._wake = None
                continue
            self._target = min(self.max_batch, self._last_n) if self.adaptive else self.max_batch
            if self.window_s > 0 and self._n_pending < self._target and not self._stopping:
                deadline = self._pending[0].queued_at + self.window_s
                if deadline > loop.time():
                    self._full = full = loop.create_future()
                    timer = loop.call_at(deadline, _resolve_once, full)
                    await full
                    timer.cancel()
                    self._full = None
            batch = [self._pending.popleft()]
            n = len(batch[0].windows)
            while self._pending and n + len(self._pending[0].windows) <= self.max_batch:
                it = self._pending.popleft()
                batch.append(it)
                n += len(it.windows)
            self._n_pending -= n
            self._last_n = n
            self._run_batch(batch)
            if self.window_s == 0:
                await asyncio.sleep(0)  # let callers resume and new requests queue

    def _run_batch(self, batch: list[_Item]) -> None:
        groups: dict[int, list[_Item]] = {}
        for it in batch:
            if not it.future.done():  # a caller that gave up is not scored
                groups.setdefault(id(it.model), []).append(it)
        for items in groups.values():
            x = items[0].windows if len(items) == 1 else np.concatenate([i.windows for i in items])
            try:
                p = items[0].model.proba(x)
            except Exception as e:  # the batcher must outlive any one bad pass
                self.stats.errors += 1
                log.exception("forward pass of %d windows failed", len(x))
                for it in items:
                    if not it.future.done():
                        it.future.set_exception(e)
                continue
            self.stats.batches += 1
            self.stats.predictions += len(x)
            self.stats.batch_sizes[len(x)] += 1
            if self.on_batch is not None:
                try:
                    self.on_batch(len(x))
                except Exception:
                    log.exception("on_batch hook failed")
            start = 0
            for it in items:
                k = len(it.windows)
                if not it.future.done():
                    it.future.set_result(p[start : start + k])
                start += k


def _resolve_once(f: asyncio.Future[None]) -> None:
    if not f.done():
        f.set_result(None)


def _plainly_valid(ticks: TickArrays) -> bool:
    """The common case of `validate` in a few vector ops (validate itself is ~3x slower per
    request); False sends the ticks through `validate` for its exact error."""
    t, p, a = ticks.time, ticks.price, ticks.amount
    return bool(
        ticks.side is None
        and np.isfinite(t).all()
        and np.isfinite(p).all()
        and np.isfinite(a).all()
        and (p > 0).all()
        and (a >= 0).all()
        and (len(t) < 2 or (t[1:] >= t[:-1]).all())
    )
