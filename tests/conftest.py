"""Fixtures every test package may use: the real PostgreSQL of this machine, one fresh database per
run (dropped afterwards), emptied before each test that asks for it; and `database`, which runs a
test once on each backend (a SQLite file, then PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import pg


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """This run's own database (skips, saying why, where there is no PostgreSQL)."""
    why = pg.unavailable()
    if why is not None:
        pytest.skip(why)
    with pg.fresh_database() as url:
        yield url


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """This run's database, emptied: no table of any earlier test is left."""
    pg.reset(pg_database)
    return pg_database


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store target for each backend in turn: a new SQLite file, then an empty PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "db" / "tickcast.db")
    url: str = request.getfixturevalue("pg_url")
    return url
