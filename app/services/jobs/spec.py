"""What a training job is asked to do (`JobSpec`), and whether it can be queued as it is.

Imported by the worker process too, before it caps its threads: nothing here imports
torch (the training settings are checked by `app.ml.config`, imported when needed).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from app.services.jobs.states import Activation

if TYPE_CHECKING:
    from app.ml.config import TrainConfig

Loc = tuple[str | int, ...]  # where a request carried the bad value: ("body", "config", "seq_len")
MAX_WORKERS = 64  # processes one data-parallel job may train on


@dataclass(frozen=True)
class JobSpec:
    exchange: str
    symbol: str
    start: float | None
    end: float | None
    config: dict[str, Any]  # training settings by name (app.ml.config); the rest take their defaults
    activate: Activation = Activation.IF_BETTER
    synthetic_ticks: int = 60_000
    workers: int = 1  # > 1: one model trained data-parallel on that many Ray Train workers


class InvalidJobSpec(ValueError):
    """A job that cannot be queued as it is asked for; nothing was queued. The message says
    what to fix; `loc` names the field, as a request body spells it."""

    def __init__(self, message: str, loc: Loc = ("body",)) -> None:
        super().__init__(message)
        self.loc = loc


def validate_spec(spec: JobSpec, *, data_parallel: bool = False) -> dict[str, Any]:
    """The spec as a JSON-able dict, or InvalidJobSpec saying what to fix. `data_parallel`: the
    jobs run where `workers` > 1 can (the Ray backend); elsewhere such a job is refused."""
    _check_market(spec)
    _check_workers(spec.workers, data_parallel)
    try:
        activate = Activation(spec.activate)
    except ValueError as e:
        choices = ", ".join(Activation)
        raise InvalidJobSpec(f"activate must be one of {choices}, got {spec.activate!r}") from e
    n = spec.synthetic_ticks
    if isinstance(n, bool) or not isinstance(n, int) or not 100 <= n <= 10_000_000:
        raise InvalidJobSpec(f"synthetic_ticks must be an integer in [100, 10000000], got {n!r}")
    cfg = config_of(spec)
    if spec.workers > cfg.batch_size:
        raise InvalidJobSpec(
            f"workers ({spec.workers}) cannot exceed config.batch_size ({cfg.batch_size}): each worker "
            "trains on its share of every batch",
            ("body", "workers"),
        )
    out = {**asdict(spec), "activate": activate.value}
    try:
        json.dumps(out, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidJobSpec(f"the job spec must be plain finite JSON values: {e}") from e
    return out


def _check_workers(n: Any, data_parallel: bool) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_WORKERS:
        raise InvalidJobSpec(
            f"workers must be an integer in [1, {MAX_WORKERS}], got {n!r}", ("body", "workers")
        )
    if n > 1 and not data_parallel:
        raise InvalidJobSpec(
            f"workers={n} trains data-parallel on Ray Train, which needs the Ray backend: start the "
            "service with TICKCAST_JOB_BACKEND=ray (pip install 'tickcast[ray]'), or ask for workers=1",
            ("body", "workers"),
        )


def _check_market(spec: JobSpec) -> None:
    """A market name and, if given, a time range that ends after it starts."""
    for name in ("exchange", "symbol"):
        v = getattr(spec, name)
        if not isinstance(v, str) or not v.strip():
            raise InvalidJobSpec(f"{name} must be a non-empty string")
    for name in ("start", "end"):
        v = getattr(spec, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)):
            raise InvalidJobSpec(f"{name} must be a finite number of unix seconds or null")
    if spec.start is not None and spec.end is not None and spec.end <= spec.start:
        raise InvalidJobSpec("end must be after start")


def config_of(spec: JobSpec) -> TrainConfig:
    """The job's training settings, checked by their one declaration (app.ml.config)."""
    from app.ml.config import TrainConfig

    if not isinstance(spec.config, dict):
        raise InvalidJobSpec("config must be an object of training settings")
    try:
        return TrainConfig.from_dict(spec.config)
    except ValueError as e:
        raise InvalidJobSpec(str(e)) from e


def market_words(exchange: str, symbol: str, start: float | None, end: float | None) -> str:
    """The market and its time range, as a person reads them (UTC)."""
    words = f"{exchange}:{symbol}"
    if start is not None:
        words += f" from {_iso(start)}"
    if end is not None:
        words += f" before {_iso(end)}"
    return words


def _iso(t: float) -> str:
    """UTC ISO 8601; a time no calendar holds (a start of -1e259 s) as its number, not a crash."""
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
    except (OverflowError, OSError, ValueError):
        return f"{t:g} s"


def more_ticks(exchange: str, symbol: str, ranged: bool) -> str:
    """What gets a market more ticks, said the way the API and the command line spell it: for
    texts nothing above the services can add to (a job's recorded error), and for the HTTP
    answer that refuses a job at submission."""
    todo = (
        f"pull ticks (POST /markets/{exchange}/{symbol}/pull, or `tickcast fetch {exchange} "
        f"{symbol}`) or import them (POST /markets/{exchange}/{symbol}/import)"
    )
    return f"{todo}, or widen start and end" if ranged else todo
