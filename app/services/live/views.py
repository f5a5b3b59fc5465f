"""What the API shows of live evaluation: per market, per model, the prediction log and its replay.

Everything here reads what the live loop stored (metrics are as of their
`computed_at`), so an answer never waits for a computation over a day of
outcomes. Replay is the exception by design: it recomputes logged predictions
from the stored ticks and the model files, to prove the log can be trusted.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from app.market.markets import Market
from app.ml import checkpoint
from app.services.live import rolling
from app.services.live.log import Outcomes, Query
from app.services.live.service import LiveEval
from app.services.markets import Markets
from app.services.registry import RegistryError

RECENT_DECISIONS = 20
REPLAY_MAX = 1_000  # predictions one replay recomputes


def _empty_body() -> dict[str, Any]:
    """A model in the running with no outcome yet: zero counts, no figures, no alerts."""
    none = Outcomes(*(np.empty(0) for _ in range(6)))
    quiet = {"auc_floor": False, "below_last_move": False, "ece_bound": False}
    return {
        "windows": {w: rolling.window_metrics(none, 0.5) for w in rolling.WINDOW_NAMES},
        "alerts": quiet,
        "reliability": [],
    }


def _entry(live: LiveEval, model_id: str, computed_at: float | None, body: dict[str, Any]) -> dict[str, Any]:
    try:
        meta = live.registry.get(model_id).meta
        arch, val = meta.arch, ((meta.metrics or {}).get("val") or {})
    except (RegistryError, OSError):
        arch, val = None, {}
    active = live.predictor.model
    version = active.calibrator_version if active is not None and active.id == model_id else 0
    return {
        "model_id": model_id,
        "role": live.role_of(model_id),
        "arch": arch,
        "calibrator_version": version,
        "computed_at": computed_at,
        "windows": body["windows"],
        "validation": {k: _finite(val.get(k)) for k in ("auc", "brier", "log_loss")},
        "alerts": body["alerts"],
        "reliability": body["reliability"],
    }


def _finite(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and np.isfinite(v) else None


def _rank(entry: dict[str, Any]) -> tuple[int, float]:
    loss = entry["windows"]["last_1000"]["log_loss"]
    order = {"active": 0, "shadow": 1}.get(entry["role"], 2)
    return order, loss if loss is not None else float("inf")


def market_live(live: LiveEval, markets: Markets, market: Market) -> dict[str, Any]:
    """The market's live leaderboard: the active model first, then the shadows by recent log loss."""
    markets.require(market)
    ex, sym = market.exchange, market.symbol
    entries = {
        mid: _entry(live, mid, at, body) for e, s, mid, at, body in live.log.metrics() if (e, s) == (ex, sym)
    }
    for mid in live.running_ids():
        if mid not in entries:
            entries[mid] = _entry(live, mid, None, _empty_body())
    pos = live.log.position(ex, sym)
    return {
        "exchange": ex,
        "symbol": sym,
        "scored_through": None if pos is None else pos[0],
        "models": sorted(entries.values(), key=_rank),
        "decisions": live.log.decisions(limit=RECENT_DECISIONS),
    }


def model_live(live: LiveEval, model_id: str) -> dict[str, Any]:
    """One model's live figures on every market it scored, its promotion history, its calibrators."""
    live.registry.get(model_id)  # UnknownModel (404) / InvalidModelId (422) first
    rows = [(e, s, at, body) for e, s, mid, at, body in live.log.metrics() if mid == model_id]
    calibrators = [{k: v for k, v in c.items() if k != "calibrator"} for c in live.log.calibrators(model_id)]
    return {
        "model_id": model_id,
        "markets": [
            {"exchange": e, "symbol": s} | _entry(live, model_id, at, body) for e, s, at, body in rows
        ],
        "history": live.log.decisions(model_id),
        "calibrators": calibrators,
    }


def predictions(live: LiveEval, q: Query, *, replay: bool = False) -> tuple[list[dict[str, Any]], bool]:
    """Logged predictions in time order (and whether more matched); with `replay`, each recomputed."""
    rows = live.log.query(dataclasses.replace(q, limit=q.limit + 1))
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    if replay:
        for r, p in zip(rows, recompute(live, rows), strict=True):
            r["replayed"] = p
    return rows, more


def recompute(live: LiveEval, rows: list[dict[str, Any]]) -> list[float | None]:
    """Each logged prediction again, from the ticks stored up to its position and the model's file
    with the calibrator version it was served with; None where the model or ticks are gone."""
    models: dict[str, checkpoint.Model | None] = {}
    out: list[float | None] = []
    for r in rows[:REPLAY_MAX]:
        mid = r["model_id"]
        if mid not in models:
            try:
                models[mid] = live.registry.load(mid, "cpu")
            except (RegistryError, OSError, ValueError):
                models[mid] = None
        model = models[mid]
        if model is None:
            out.append(None)
            continue
        ticks, _ = live.store.before(r["exchange"], r["symbol"], (r["time"], r["seq"]), model.spec.min_ticks)
        if len(ticks) < model.spec.min_ticks:
            out.append(None)
            continue
        cal = live.calibrator_of(model, int(r["calibrator_version"]))
        out.append(float(cal.apply(model.logits(model.spec.last_window(ticks)[None]))[0]))
    return out + [None] * (len(rows) - len(out))
