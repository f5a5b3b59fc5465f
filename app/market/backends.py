"""The one place that picks a tick store class for a target (`app.database`): a SQLite file or a
postgresql:// URL. Composition roots and worker processes open stores through here, so a worker
handed a store's `path` opens the same store, whichever backend it is."""

from __future__ import annotations

from pathlib import Path

from app.database import is_postgres
from app.market.storage import StoreError, TickStorage
from app.market.store import TickStore


def open_tick_store(target: str | Path) -> TickStorage:
    if is_postgres(target):
        from app.market.pg_store import PgTickStore  # psycopg only for a postgresql:// target

        return PgTickStore(str(target))
    return TickStore(target)


def store_errors(target: str | Path) -> tuple[type[Exception], ...]:
    """What a store on this target raises when it cannot answer now, known before it is opened (a
    worker that cannot even connect answers "retry later" as it would for a failed read)."""
    if is_postgres(target):
        from app import pg

        return (*pg.errors(), StoreError)
    return (*TickStore.errors, StoreError)
