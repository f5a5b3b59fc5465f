"""The tick store's seam: TickStore has everything TickStorage promises, and nothing of the jobs."""

from __future__ import annotations

import inspect
import sqlite3
from pathlib import Path

from app.market import store as store_module
from app.market.storage import Position, StoreError, TickStorage
from app.market.store import TickStore


def members(cls: type) -> set[str]:
    return {n for n in vars(cls) if not n.startswith("_")}


def test_tick_store_has_every_member_of_the_protocol_with_its_parameters(tmp_path: Path) -> None:
    """mypy checks the types (`store._conforms`); this, that nothing is missing at run time."""
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
    storage: TickStorage = TickStore(tmp_path / "t.db")  # the typed assignment mypy checks
    try:
        for name in wanted:
            assert hasattr(storage, name), name
            theirs = getattr(TickStorage, name)
            if inspect.isfunction(theirs):
                ours = getattr(TickStore, name)
                assert (
                    inspect.signature(ours).parameters.keys() == inspect.signature(theirs).parameters.keys()
                )
        assert storage.path == str(tmp_path / "t.db") and storage.schema_version >= 1
        assert storage.errors == (sqlite3.Error,)
    finally:
        storage.close()


def test_the_names_others_import_from_the_store_are_the_seams() -> None:
    assert store_module.StoreError is StoreError and store_module.Position is Position
    assert store_module.DEFAULT_PATH == Path("data/tickcast.db")
    assert "transaction" not in members(TickStore)
