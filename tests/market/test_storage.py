"""The tick store's seam: both backends (TickStore on SQLite, PgTickStore on PostgreSQL) have
everything TickStorage promises, and nothing of the jobs."""

from __future__ import annotations

import inspect
import sqlite3
from pathlib import Path

from app import pg
from app.database import is_postgres
from app.market import store as store_module
from app.market.backends import open_tick_store, store_errors
from app.market.storage import Position, StoreError, TickStorage


def members(cls: type) -> set[str]:
    return {n for n in vars(cls) if not n.startswith("_")}


def test_each_store_has_every_member_of_the_protocol_with_its_parameters(database: str) -> None:
    """mypy checks the types (`store._conforms`, `pg_store._conforms`); this, that nothing is
    missing at run time."""
    wanted = members(TickStorage)
    assert wanted == {
        "path",
        "schema_version",
        "errors",
        "insert",
        "cursor",
        "read",
        "latest",
        "after",
        "before",
        "count",
        "time_range",
        "markets",
        "gaps",
        "close",
    }
    storage: TickStorage = open_tick_store(database)  # the typed assignment mypy checks
    try:
        for name in wanted:
            assert hasattr(storage, name), name
            theirs = getattr(TickStorage, name)
            if inspect.isfunction(theirs):
                ours = getattr(type(storage), name)
                assert (
                    inspect.signature(ours).parameters.keys() == inspect.signature(theirs).parameters.keys()
                )
        assert storage.path == database and storage.schema_version >= 1
        if is_postgres(database):
            assert type(storage).__name__ == "PgTickStore"
            assert storage.errors == (*pg.errors(), StoreError)
        else:
            assert storage.errors == (sqlite3.Error,)
        assert set(storage.errors) <= set(store_errors(database))  # what a worker catches before opening
    finally:
        storage.close()


def test_the_names_others_import_from_the_store_are_the_seams() -> None:
    assert store_module.StoreError is StoreError and store_module.Position is Position
    assert store_module.DEFAULT_PATH == Path("data/tickcast.db")
    assert "transaction" not in members(store_module.TickStore)
