"""The one place that picks where checkpoints and the active pointer live for a store target
(`app.database`): the models folder alone (the default), or, with PostgreSQL, the database, which
every replica and training worker shares, with the folder as this machine's cache."""

from __future__ import annotations

from pathlib import Path

from app.database import is_postgres
from app.services.registry import Registry


def open_registry(models_dir: str | Path, target: str) -> Registry:
    if is_postgres(target):
        from app.services.pg_models import PgRegistry  # psycopg only for a postgresql:// target

        return PgRegistry(models_dir, target)
    return Registry(models_dir)
