"""The prediction log: every live prediction, its outcome, and what was learnt from them.

It lives in the tick store's file (one thing to back up, as the job store does)
with a schema version of its own (`live_schema`). Predictions are keyed by
(series, time, seq): a series is one (market, model), and (time, seq) is the
position in the store of the tick whose window ended the prediction, which is
what a replay reads back. A prediction's outcome is written when the tick
`horizon` places later is stored, in the same transaction that moves the
market's scoring position, so a crash never leaves an outcome without its
prediction or a position past unlogged ticks.

The rolling metrics, the promotion decisions and the calibrator versions are
small tables beside it (`records.py`); the connection and schema are `db.py`'s.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

from app.market.storage import Position
from app.services.live.db import LiveTables, LogError, Sql
from app.services.live.records import LiveRecords

__all__ = ["LiveTables", "LogError", "Outcomes", "PredictionLog", "Query", "Resolved", "Scored"]

ROLES = ("shadow", "active")


@dataclass(frozen=True)
class Query:
    """Which logged predictions to list: each filter None for any; the first `limit` in time order."""

    exchange: str | None = None
    symbol: str | None = None
    model_id: str | None = None
    start: float | None = None  # tick time, inclusive
    end: float | None = None  # tick time, exclusive
    limit: int = 1_000


@dataclass(frozen=True)
class Scored:
    """One model's predictions of one scoring step, as columns (one row per scored tick)."""

    model_id: str
    role: str  # active or shadow
    calibrator: int
    time: np.ndarray
    seq: np.ndarray
    probability: np.ndarray
    logit: np.ndarray
    last_move: np.ndarray
    outcome: np.ndarray  # 0/1, NaN while the tick `horizon` later is not stored yet


@dataclass(frozen=True)
class Resolved:
    """Outcomes now known for one model's earlier predictions."""

    model_id: str
    time: np.ndarray
    seq: np.ndarray
    outcome: np.ndarray


@dataclass(frozen=True)
class Outcomes:
    """A series' resolved predictions, oldest first."""

    time: np.ndarray
    seq: np.ndarray
    probability: np.ndarray
    logit: np.ndarray
    outcome: np.ndarray
    last_move: np.ndarray

    def __len__(self) -> int:
        return len(self.time)

    def tail(self, n: int) -> Outcomes:
        k = max(0, len(self) - n)
        return Outcomes(*(a[k:] for a in vars(self).values()))


# series_id, time, seq, probability, logit, calibrator, role, last_move, outcome, scored_at, resolved_at
PredictionRow = tuple[int | None, float, int, float, float, int, int, int, int | None, float, float | None]

_OUT_DTYPE = np.dtype(
    [("time", "f8"), ("seq", "i8"), ("p", "f8"), ("logit", "f8"), ("y", "f8"), ("last_move", "f8")]
)


class PredictionLog(LiveRecords):
    """SQLite tables of the live evaluation; one connection shared by threads under one lock.
    The SQL serves PostgreSQL too (`pg.py`), which replaces the bulk writes of a step."""

    # a market's scoring position, moved by each step
    _SET_POSITION = (
        "INSERT INTO live_positions (exchange, symbol, time, seq) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (exchange, symbol) DO UPDATE SET time = excluded.time, seq = excluded.seq"
    )

    # ------------------------------------------------------------ scoring

    def position(self, exchange: str, symbol: str) -> Position | None:
        """The last tick of this market that live scoring has seen (None: never scored)."""
        with self._reading() as db:
            row = db.execute(
                "SELECT time, seq FROM live_positions WHERE exchange = ? AND symbol = ?", (exchange, symbol)
            ).fetchone()
        return None if row is None else (float(row[0]), int(row[1]))

    def record(
        self,
        exchange: str,
        symbol: str,
        position: Position,
        scored: list[Scored],
        resolved: list[Resolved],
    ) -> None:
        """One scoring step in one transaction: new predictions, outcomes of earlier ones, the position."""
        now = time.time()
        with self._transaction() as db:
            sids = [self._series_id(db, exchange, symbol, s.model_id, create=True) for s in scored]
            self._insert(
                db,
                chain.from_iterable(
                    prediction_rows(sid, s, now) for sid, s in zip(sids, scored, strict=True)
                ),
            )
            for r in resolved:
                sid = self._series_id(db, exchange, symbol, r.model_id, create=False)
                if sid is not None:
                    self._resolve(db, sid, r, now)
            db.execute(self._SET_POSITION, (exchange, symbol, float(position[0]), int(position[1])))

    def _insert(self, db: Sql, rows: Iterable[PredictionRow]) -> None:
        """A step's new predictions, every model's (a row already logged stays as it is)."""
        db.executemany(
            "INSERT OR IGNORE INTO live_predictions (series_id, time, seq, probability, logit,"
            " calibrator, role, last_move, outcome, scored_at, resolved_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def _resolve(self, db: Sql, sid: int, r: Resolved, now: float) -> None:
        """Outcomes of a model's predictions still open (a prediction resolved once keeps its own)."""
        db.executemany(
            "UPDATE live_predictions SET outcome = ?, resolved_at = ?"
            " WHERE series_id = ? AND time = ? AND seq = ? AND outcome IS NULL",
            zip(
                r.outcome.astype(np.int64).tolist(),
                [now] * len(r.time),
                [sid] * len(r.time),
                r.time.tolist(),
                r.seq.tolist(),
                strict=True,
            ),
        )

    # ------------------------------------------------------------ reading outcomes

    def outcomes(
        self, exchange: str, symbol: str, model_id: str, *, last: int, since: float | None = None
    ) -> Outcomes:
        """The newest `last` resolved predictions (those at tick time >= `since`, if given), oldest first."""
        with self._reading() as db:
            sid = self._series_id(db, exchange, symbol, model_id, create=False)
            if sid is None:
                return _outcomes(np.empty(0, _OUT_DTYPE))
            # the id as an integer: PostgreSQL compares a float8 parameter without the key's index
            where = "series_id = ? AND outcome IS NOT NULL"
            args: list[float] = [sid]
            if since is not None:
                where += " AND time >= ?"
                args.append(since)
            cur = db.execute(
                f"SELECT time, seq, probability, logit, outcome, last_move FROM live_predictions"
                f" WHERE {where} ORDER BY time DESC, seq DESC LIMIT ?",
                [*args, int(last)],
            )
            rows = np.fromiter(cur, dtype=_OUT_DTYPE)[::-1]
        return _outcomes(rows)

    def paired(
        self, exchange: str, symbol: str, a: str, b: str, *, last: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(outcome, p_a, p_b) on the newest `last` ticks both models scored and whose outcome is known."""
        with self._reading() as db:
            sa = self._series_id(db, exchange, symbol, a, create=False)
            sb = self._series_id(db, exchange, symbol, b, create=False)
            if sa is None or sb is None:
                return np.empty(0), np.empty(0), np.empty(0)
            cur = db.execute(
                "SELECT x.outcome, x.probability, y.probability FROM live_predictions x"
                " JOIN live_predictions y ON y.series_id = ? AND y.time = x.time AND y.seq = x.seq"
                " WHERE x.series_id = ? AND x.outcome IS NOT NULL ORDER BY x.time DESC, x.seq DESC LIMIT ?",
                (sb, sa, int(last)),
            )
            rows = np.fromiter(cur, dtype=np.dtype([("y", "f8"), ("a", "f8"), ("b", "f8")]))[::-1]
        return rows["y"].copy(), rows["a"].copy(), rows["b"].copy()

    def query(self, q: Query) -> list[dict[str, Any]]:
        """Logged predictions in time order, for GET /predictions (markets whose ticks share a time and
        seq in their own orders are put in a fixed order too: a page reads the same on every backend)."""
        where: list[str] = ["1 = 1"]
        args: list[str | float] = []
        for col, v in (("s.exchange", q.exchange), ("s.symbol", q.symbol), ("s.model_id", q.model_id)):
            if v is not None:
                where.append(f"{col} = ?")
                args.append(v)
        for cond, t in (("p.time >= ?", q.start), ("p.time < ?", q.end)):
            if t is not None:
                where.append(cond)
                args.append(t)
        with self._reading() as db:
            cur = db.execute(
                "SELECT s.exchange, s.symbol, s.model_id, p.role, p.calibrator, p.time, p.seq,"
                " p.probability, p.outcome, p.scored_at, p.resolved_at FROM live_predictions p"
                f" JOIN live_series s ON s.id = p.series_id WHERE {' AND '.join(where)}"
                " ORDER BY p.time, p.seq, s.model_id, s.exchange, s.symbol LIMIT ?",
                [*args, int(q.limit)],
            )
            names = [d[0] for d in cur.description]
            out = [dict(zip(names, row, strict=True)) for row in cur]
        for r in out:
            r["role"] = ROLES[int(r["role"])]
            r["calibrator_version"] = r.pop("calibrator")
        return out

    def prune(self, retention_s: float) -> int:
        """Drop predictions older than `retention_s` before each series' newest one (tick time):
        per series one b-tree descent and one range delete, never a scan of the table."""
        dropped = 0
        with self._transaction() as db:
            for (sid,) in db.execute("SELECT id FROM live_series").fetchall():
                row = db.execute(
                    "SELECT time FROM live_predictions WHERE series_id = ? ORDER BY time DESC LIMIT 1", (sid,)
                ).fetchone()
                if row is not None:
                    dropped += db.execute(
                        "DELETE FROM live_predictions WHERE series_id = ? AND time < ?",
                        (sid, float(row[0]) - float(retention_s)),
                    ).rowcount
        return dropped


def _outcomes(rows: np.ndarray) -> Outcomes:
    def col(name: str) -> np.ndarray:
        return np.ascontiguousarray(rows[name])

    return Outcomes(col("time"), col("seq"), col("p"), col("logit"), col("y"), col("last_move"))


def prediction_rows(sid: int | None, s: Scored, now: float) -> Iterator[PredictionRow]:
    """One model's new predictions as live_predictions rows; those whose outcome is known carry it."""
    known = ~np.isnan(s.outcome)
    outcome = np.where(known, s.outcome, 0).astype(np.int64)
    role = ROLES.index(s.role)
    for t, q, p, lg, m, o, k in zip(
        s.time.tolist(),
        s.seq.tolist(),
        s.probability.tolist(),
        s.logit.tolist(),
        s.last_move.astype(np.int64).tolist(),
        outcome.tolist(),
        known.tolist(),
        strict=True,
    ):
        yield (sid, t, q, p, lg, s.calibrator, role, m, o if k else None, now, now if k else None)
