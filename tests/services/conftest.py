"""Fixtures for the services tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.market.store import TickStore
from app.services.registry import Registry


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[TickStore, Registry]]:
    """A tick store and a models folder under tmp_path, as a JobManager takes them."""
    store = TickStore(tmp_path / "t.db")
    registry = Registry(tmp_path / "models")
    yield store, registry
    store.close()
