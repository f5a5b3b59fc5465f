"""A single-machine install moved to PostgreSQL keeps its models: a database with no model yet takes
the folder's loadable checkpoints and its ACTIVE choice, once, and never again afterwards."""

from __future__ import annotations

from pathlib import Path

from app.services.model_store import adopt_folder, open_registry
from app.services.registry import Registry
from tests.helpers.checkpoints import write_bad, write_model


def test_a_database_with_no_model_adopts_the_folder_and_its_active_choice(
    tmp_path: Path, pg_url: str
) -> None:
    folder = tmp_path / "models"
    write_model(folder, "old-a", created_at="2024-01-01T00:00:00+00:00")
    write_model(folder, "old-b", created_at="2024-01-02T00:00:00+00:00", seed=1)
    write_bad(folder, "broken", "absurd")
    (folder / "ACTIVE").write_text("old-a")
    registry = open_registry(folder, pg_url)
    try:
        assert sorted(adopt_folder(registry)) == ["old-a", "old-b"]  # the damaged one stays behind
        other = open_registry(tmp_path / "elsewhere", pg_url)  # another replica, an empty cache
        try:
            assert sorted(m.id for m in other.list()) == ["old-a", "old-b"]
            assert other.active_id() == "old-a"
            assert other.load("old-b").id == "old-b"
        finally:
            other.close()
    finally:
        registry.close()


def test_once_the_database_has_models_a_cached_file_is_never_brought_back(
    tmp_path: Path, pg_url: str
) -> None:
    first = open_registry(tmp_path / "a", pg_url)
    try:
        first.publish(write_model(tmp_path / "a", "shared", created_at="2024-01-01T00:00:00+00:00"))
        # a replica that was down while "gone" was deleted still has it in its cache folder
        write_model(tmp_path / "b", "gone", created_at="2024-01-03T00:00:00+00:00")
        second = open_registry(tmp_path / "b", pg_url)
        try:
            assert adopt_folder(second) == []
            assert [m.id for m in second.list()] == ["shared"]
        finally:
            second.close()
    finally:
        first.close()


def test_the_folder_registry_adopts_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    write_model(folder, "m", created_at="2024-01-01T00:00:00+00:00")
    assert adopt_folder(Registry(folder)) == []
