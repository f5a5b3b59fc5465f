"""The one place that picks the prediction log's backend for a store target (`app.database`)."""

from __future__ import annotations

from app.database import is_postgres
from app.services.live.log import PredictionLog


def open_prediction_log(target: str) -> PredictionLog:
    if is_postgres(target):
        from app.services.live.pg import PgPredictionLog  # psycopg only for a postgresql:// target

        return PgPredictionLog(target)
    return PredictionLog(target)
