"""The small tables beside the prediction log: rolling metrics as last computed, promotion decisions
with their evidence, the challengers jobs asked for, and calibrator versions. A restart keeps them."""

from __future__ import annotations

import json
import time
from typing import Any

from app.services.live.db import LiveTables


class LiveRecords(LiveTables):
    def save_metrics(self, exchange: str, symbol: str, model_id: str, body: dict[str, Any]) -> None:
        with self._transaction() as db:
            sid = self._series_id(db, exchange, symbol, model_id, create=True)
            db.execute(
                "INSERT INTO live_metrics (series_id, computed_at, body) VALUES (?, ?, ?) ON CONFLICT"
                " (series_id) DO UPDATE SET computed_at = excluded.computed_at, body = excluded.body",
                (sid, time.time(), json.dumps(body)),
            )

    def metrics(self) -> list[tuple[str, str, str, float, dict[str, Any]]]:
        """(exchange, symbol, model_id, computed_at, body) of every series with metrics."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT s.exchange, s.symbol, s.model_id, m.computed_at, m.body FROM live_metrics m"
                " JOIN live_series s ON s.id = m.series_id ORDER BY s.id"
            ).fetchall()
        return [(e, s, mid, float(at), json.loads(body)) for e, s, mid, at, body in rows]

    def add_decision(self, active_id: str, challenger_id: str, decision: str, body: dict[str, Any]) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO live_decisions (at, active_id, challenger_id, decision, body)"
                " VALUES (?, ?, ?, ?, ?)",
                (time.time(), active_id, challenger_id, decision, json.dumps(body)),
            )

    def decisions(self, model_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Promotion decisions, newest first (those naming `model_id` on either side, if given)."""
        where, args = (
            ("", [])
            if model_id is None
            else (" WHERE active_id = ? OR challenger_id = ?", [model_id, model_id])
        )
        with self._reading() as db:
            rows = db.execute(
                f"SELECT at, active_id, challenger_id, decision, body FROM live_decisions{where}"
                " ORDER BY id DESC LIMIT ?",
                [*args, int(limit)],
            ).fetchall()
        return [
            {"at": at, "active_id": a, "challenger_id": c, "decision": d, **json.loads(body)}
            for at, a, c, d, body in rows
        ]

    def pin(self, model_id: str) -> None:
        """Make `model_id` a challenger that live evidence alone may promote (if_better_live)."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO live_challengers (model_id, added_at) VALUES (?, ?)",
                (model_id, time.time()),
            )

    def unpin(self, model_id: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM live_challengers WHERE model_id = ?", (model_id,))

    def pinned(self) -> list[str]:
        """The pinned challengers, newest first."""
        with self._reading() as db:
            rows = db.execute("SELECT model_id FROM live_challengers ORDER BY added_at DESC").fetchall()
        return [str(r[0]) for r in rows]

    def add_calibrator(
        self, model_id: str, calibrator: dict[str, Any], report: dict[str, Any], kept: bool
    ) -> int:
        """Record a refitted calibrator (kept or not) under the model's next version number."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT MAX(version) FROM live_calibrators WHERE model_id = ?", (model_id,)
            ).fetchone()
            version = 1 + (int(row[0]) if row[0] is not None else 0)
            db.execute(
                "INSERT INTO live_calibrators (model_id, version, kept, fitted_at, calibrator, report)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (model_id, version, int(kept), time.time(), json.dumps(calibrator), json.dumps(report)),
            )
        return version

    def calibrators(self, model_id: str) -> list[dict[str, Any]]:
        """A model's refitted calibrators, newest first: version, kept, fitted_at, the report."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT version, kept, fitted_at, calibrator, report FROM live_calibrators WHERE model_id = ?"
                " ORDER BY version DESC",
                (model_id,),
            ).fetchall()
        return [
            {"version": v, "kept": bool(k), "fitted_at": at, "calibrator": json.loads(c), **json.loads(r)}
            for v, k, at, c, r in rows
        ]

    def calibrator(self, model_id: str, version: int | None = None) -> tuple[int, dict[str, Any]] | None:
        """(version, calibrator) of the given version, or of the newest kept one."""
        q = "SELECT version, calibrator FROM live_calibrators WHERE model_id = ?"
        args: list[Any] = [model_id]
        if version is None:
            q += " AND kept = 1 ORDER BY version DESC LIMIT 1"
        else:
            q += " AND version = ?"
            args.append(int(version))
        with self._reading() as db:
            row = db.execute(q, args).fetchone()
        return None if row is None else (int(row[0]), json.loads(row[1]))
