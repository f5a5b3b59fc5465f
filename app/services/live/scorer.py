"""One scoring step of one market: the ticks stored since the last step, scored by every entrant.

A step reads the new ticks (oldest first, at most `chunk`) and, before them, the
context the longest window needs, scores each new tick with each model on the
window that ends at it (exactly the window `/predict` would build from the
stored ticks up to that tick), and works out the outcome of every prediction
whose tick `horizon` places later is now stored: the new ones and those the
previous step left open. The log records all of it with the new position in
one transaction.

A window never spans a gap (a pause longer than `gap_s`): the ticks whose
window would reach back across one are not scored, as training never saw such
a window. Event-target models are not scored live (an event's last fills may
still be arriving when its first is stored).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.market.storage import Position, TickStorage
from app.market.ticks import TickArrays
from app.ml import checkpoint
from app.services.live.log import PredictionLog, Resolved, Scored

CHUNK = 4096  # new ticks per step: bounds a step's memory and how long it holds the log's lock


@dataclass(frozen=True)
class Entrant:
    """A model scoring live, and whether it is the active one or a shadow."""

    model: checkpoint.Model
    role: str  # active or shadow


@dataclass(frozen=True)
class Step:
    """What one step did: ticks read past the old position, predictions made per model."""

    ticks: int
    scored: dict[str, int]
    position: Position


def scorable(model: checkpoint.Model) -> bool:
    """Live scoring covers tick-target models (events may grow after their first fill is stored)."""
    return model.spec.target == "tick"


def start_position(store: TickStorage, exchange: str, symbol: str) -> Position | None:
    """Where scoring of a market never scored starts: its newest tick now (history is not live)."""
    newest, seqs = store.after(exchange, symbol, None, 1)
    return (float(newest.time[-1]), int(seqs[-1])) if len(seqs) else None


def step(
    store: TickStorage,
    log: PredictionLog,
    exchange: str,
    symbol: str,
    entrants: list[Entrant],
    *,
    gap_s: float,
    chunk: int = CHUNK,
) -> Step | None:
    """Score what is new in one market; None when nothing is (or the market is new: it starts now)."""
    pos = log.position(exchange, symbol)
    if pos is None:
        first = start_position(store, exchange, symbol)
        if first is not None:
            log.record(exchange, symbol, first, [], [])
        return None
    new, new_seqs = store.after(exchange, symbol, pos, chunk, oldest=True)
    if len(new) == 0:
        return None
    models = [e for e in entrants if scorable(e.model)]
    keep = max([max(e.model.spec.min_ticks - 1, e.model.meta.horizon) for e in models], default=0)
    ctx, ctx_seqs = store.before(exchange, symbol, pos, keep) if keep else (TickArrays.empty(), new_seqs[:0])
    ticks = TickArrays.concat([ctx, new])
    seqs = np.concatenate([ctx_seqs, new_seqs])
    scored, resolved, counts = [], [], {}
    for e in models:
        s, r = _score(e, ticks, seqs, len(ctx), gap_s)
        counts[e.model.id] = len(s.time)
        scored.append(s)
        resolved.append(r)
    last = (float(new.time[-1]), int(new_seqs[-1]))
    log.record(exchange, symbol, last, scored, resolved)
    return Step(len(new), counts, last)


def _score(
    e: Entrant, ticks: TickArrays, seqs: np.ndarray, n_ctx: int, gap_s: float
) -> tuple[Scored, Resolved]:
    """One model's predictions on ticks n_ctx.. and the outcomes of its predictions on the context."""
    model, spec = e.model, e.model.spec
    n, h, price = len(ticks), model.meta.horizon, ticks.price
    first = max(n_ctx, spec.min_ticks - 1)
    idx = np.arange(first, n)
    idx = idx[_clear_of_gaps(ticks.time, idx, spec.min_ticks, gap_s)]
    logit = model.logits_ending_at(ticks, first)[idx - first] if len(idx) else np.empty(0)
    prob = model.calibrator.apply(logit) if len(logit) else np.empty(0)
    later = idx + h
    outcome = np.full(len(idx), np.nan)
    known = later < n
    outcome[known] = price[later[known]] > price[idx[known]]
    scored = Scored(
        model.id,
        e.role,
        model.calibrator_version,
        ticks.time[idx],
        seqs[idx],
        prob,
        logit,
        np.sign(price[idx] - price[idx - 1]),
        outcome,
    )
    # predictions the previous step left open: context ticks whose tick h later is new
    old = np.arange(max(0, n_ctx - h), n_ctx)
    old = old[old + h < n]
    resolved = Resolved(
        model.id, ticks.time[old], seqs[old], (price[old + h] > price[old]).astype(np.float64)
    )
    return scored, resolved


def _clear_of_gaps(t: np.ndarray, idx: np.ndarray, span: int, gap_s: float) -> np.ndarray:
    """Which windows ending at `idx` (each reading the `span` ticks up to it) contain no pause over gap_s."""
    after_gap = np.flatnonzero(np.diff(t) > gap_s) + 1  # the first tick after each pause
    if not len(after_gap) or not len(idx):
        return np.ones(len(idx), dtype=bool)
    k = np.searchsorted(after_gap, idx, side="right") - 1
    latest = np.where(k >= 0, after_gap[np.maximum(k, 0)], 0)
    ok: np.ndarray = idx - span + 1 >= latest
    return ok
