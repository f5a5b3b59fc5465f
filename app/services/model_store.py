"""The one place that picks where checkpoints and the active pointer live for a store target
(`app.database`): the models folder alone (the default), or, with PostgreSQL, the database, which
every replica and training worker shares, with the folder as this machine's cache."""

from __future__ import annotations

import logging
from pathlib import Path

from app.database import is_postgres
from app.services.registry import Registry

log = logging.getLogger(__name__)


def open_registry(models_dir: str | Path, target: str) -> Registry:
    if is_postgres(target):
        from app.services.pg_models import PgRegistry  # psycopg only for a postgresql:// target

        return PgRegistry(models_dir, target)
    return Registry(models_dir)


def adopt_folder(registry: Registry) -> list[str]:
    """A database that holds no model yet takes the loadable checkpoints of the models folder and its
    ACTIVE choice, so a single-machine install moved to PostgreSQL keeps its models and keeps serving
    the same one. Only then: once the database has models, a file left in a replica's cache folder
    (a model deleted elsewhere while it was down) is never brought back. The ids adopted."""
    if type(registry) is Registry or not registry.empty():  # no blob is fetched to know
        return []
    folder = Registry(registry.folder)
    adopted = [m for m in folder.list() if m.loadable]
    for m in adopted:
        registry.publish(m.path)
    active = folder.active_id()
    if active is not None and any(m.id == active for m in adopted):
        registry.activate(active)
    if adopted:
        log.info(
            "the database had no model: adopted %d from %s (active: %s)", len(adopted), folder.folder, active
        )
    return [m.id for m in adopted]
