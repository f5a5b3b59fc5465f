"""The models folder: listing, activation, deletion, id validation, promotion policy."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from app.ml import checkpoint, features
from app.services.jobs.states import Activation
from app.services.registry import (
    InvalidModelId,
    ModelInUse,
    Registry,
    UnknownModel,
    UnloadableModel,
    should_promote,
)
from tests.helpers.checkpoints import BAD, write_bad, write_model


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    folder = tmp_path / "models"
    folder.mkdir()
    write_model(folder, "old", created_at="2024-01-01T00:00:00+00:00", seed=1)
    write_model(folder, "mid", created_at="2024-06-01T00:00:00+00:00", seed=2)
    write_model(folder, "new", created_at="2025-01-01T00:00:00+00:00", seed=3)
    return Registry(folder)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_creates_folder(tmp_path: Path) -> None:
    r = Registry(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir()
    assert r.list() == [] and r.active_id() is None


def test_list_newest_first_with_meta(reg: Registry) -> None:
    infos = reg.list()
    assert [m.id for m in infos] == ["new", "mid", "old"]
    assert all(m.size_bytes > 0 and m.path.is_file() and not m.active for m in infos)
    assert infos[0].meta.seq_len == 8 and infos[0].meta.val_auc == 0.55


def test_list_caches_metadata(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    reg.list()
    calls: list[object] = []
    real = checkpoint.read
    monkeypatch.setattr(checkpoint, "read", lambda *a, **k: calls.append(a) or real(*a, **k))
    reg.list()
    assert calls == []  # unchanged files are not re-read
    write_model(reg.folder, "mid", created_at="2026-01-01T00:00:00+00:00", seq_len=4)
    infos = reg.list()
    assert len(calls) == 1 and infos[0].id == "mid" and infos[0].meta.seq_len == 4


def test_corrupt_and_stray_files_are_skipped(reg: Registry, caplog: pytest.LogCaptureFixture) -> None:
    (reg.folder / "broken.pt").write_bytes(b"not a torch file")
    torch.save({"hello": 1}, reg.folder / "foreign.pt")
    (reg.folder / ".new.pt.123.tmp").write_bytes(b"partial")
    (reg.folder / "notes.txt").write_text("x")
    with caplog.at_level(logging.WARNING):
        ids = [m.id for m in reg.list()]
    assert ids == ["new", "mid", "old"]
    assert "broken.pt" in caplog.text and "foreign.pt" in caplog.text
    with pytest.raises(UnknownModel):
        reg.activate("broken")
    assert reg.active_id() is None


def test_get(reg: Registry) -> None:
    info = reg.get("mid")
    assert info.id == "mid" and (info.meta.created_at or "").startswith("2024-06") and not info.active
    with pytest.raises(UnknownModel):
        reg.get("nope")


def test_activate_and_active_id(reg: Registry) -> None:
    assert reg.active_id() is None
    info = reg.activate("mid")
    assert info.active and reg.active_id() == "mid"
    assert (reg.folder / "ACTIVE").read_text().strip() == "mid"
    assert [m.id for m in reg.list() if m.active] == ["mid"]
    assert reg.get("mid").active
    reg.activate("new")
    assert reg.active_id() == "new"
    assert not [p for p in reg.folder.iterdir() if p.name.endswith(".tmp")]
    # ACTIVE naming a file that is gone (deleted behind our back) means no active model
    os.unlink(reg.path("new"))
    assert reg.active_id() is None
    (reg.folder / "ACTIVE").write_text("../../etc/passwd\n")
    assert reg.active_id() is None


def test_delete_and_refuse_active(reg: Registry) -> None:
    reg.activate("new")
    before = snapshot(reg.folder)
    with pytest.raises(ModelInUse):
        reg.delete("new")
    assert snapshot(reg.folder) == before
    reg.delete("old")
    assert [m.id for m in reg.list()] == ["new", "mid"]
    with pytest.raises(UnknownModel):
        reg.delete("old")


@pytest.mark.parametrize(
    "bad",
    [
        "../x",
        "a/b",
        "",
        ".hidden",
        "x" * 129,
        "..",
        "a\\b",
        "/etc/passwd",
        "a b",
        "a\x00b",
        "mid.pt/../new",
        "-lead",
        "ü",
    ],
)
def test_invalid_ids_change_nothing(reg: Registry, bad: str) -> None:
    reg.activate("mid")
    (reg.folder.parent / "x.pt").write_bytes(b"outside")
    before = snapshot(reg.folder)
    for call in (reg.path, reg.get, reg.activate, reg.delete, reg.load):
        with pytest.raises(InvalidModelId):
            call(bad)
    assert snapshot(reg.folder) == before and reg.active_id() == "mid"
    assert (reg.folder.parent / "x.pt").exists()


def test_unknown_ids_change_nothing(reg: Registry) -> None:
    reg.activate("mid")
    before = snapshot(reg.folder)
    for call in (reg.get, reg.activate, reg.delete, reg.load):
        with pytest.raises(UnknownModel):
            call("missing")
    assert snapshot(reg.folder) == before and reg.active_id() == "mid"


def test_path_stays_inside(reg: Registry) -> None:
    assert reg.path("a.b_c-1") == reg.folder / "a.b_c-1.pt"
    assert reg.path("x" * 128).parent == reg.folder


def test_load(reg: Registry) -> None:
    m = reg.load("mid", "cpu")
    assert m.id == "mid" and m.seq_len == 8 and m.device.type == "cpu"
    p = m.proba(np.zeros((3, 8, len(features.FEATURES)), np.float32))
    assert p.shape == (3,) and np.all((p > 0) & (p < 1))


@pytest.mark.parametrize(
    ("policy", "challenger", "incumbent", "expected"),
    [
        ("never", 0.9, 0.5, False),
        ("never", 0.9, None, False),
        ("always", 0.4, 0.9, True),
        ("always", None, 0.9, True),
        ("if_better", 0.6, None, True),
        ("if_better", 0.6, math.nan, True),
        ("if_better", 0.6, 0.55, True),
        ("if_better", 0.55, 0.55, False),
        ("if_better", 0.5, 0.55, False),
        ("if_better", None, None, False),
        ("if_better", math.nan, None, False),
        ("if_better", math.nan, 0.5, False),
    ],
)
def test_should_promote(policy, challenger, incumbent, expected) -> None:
    ok, reason = should_promote(policy, challenger, incumbent)
    assert ok is expected and isinstance(reason, str) and reason


def test_should_promote_rejects_unknown_policy() -> None:
    with pytest.raises(ValueError):
        should_promote("sometimes", 0.6, 0.5)  # type: ignore[arg-type]


def test_should_promote_takes_the_policy_as_its_enum_or_its_string() -> None:
    for policy in Activation:
        assert should_promote(policy, 0.6, 0.5) == should_promote(policy.value, 0.6, 0.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------- unloadable models


@pytest.mark.parametrize("case", list(BAD))
def test_unloadable_models_are_listed_with_the_reason(reg: Registry, case: str) -> None:
    write_bad(reg.folder, "bad", case)
    reg.activate("mid")
    before = snapshot(reg.folder)
    infos = {m.id: m for m in reg.list()}
    assert set(infos) == {"new", "mid", "old", "bad"}
    assert not infos["bad"].loadable and BAD[case] in (infos["bad"].unloadable_reason or "")
    assert all(m.loadable and m.unloadable_reason is None for k, m in infos.items() if k != "bad")
    got = reg.get("bad")
    assert not got.loadable and got.unloadable_reason == infos["bad"].unloadable_reason
    with pytest.raises(UnloadableModel, match="cannot be activated") as e:
        reg.activate("bad")
    assert BAD[case] in str(e.value) and isinstance(e.value, checkpoint.CheckpointError)
    with pytest.raises(UnloadableModel, match="cannot be loaded") as e:
        reg.load("bad")
    assert BAD[case] in str(e.value)
    assert snapshot(reg.folder) == before and reg.active_id() == "mid"


def test_an_active_unloadable_model_is_listed_as_active(reg: Registry) -> None:
    write_bad(reg.folder, "bad", "absurd")
    (reg.folder / "ACTIVE").write_text("bad\n")  # chosen before it went bad, or by hand
    assert reg.active_id() == "bad"
    [bad] = [m for m in reg.list() if m.id == "bad"]
    assert bad.active and not bad.loadable


def test_the_verdict_is_cached_until_the_file_changes(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    write_bad(reg.folder, "bad", "shapes")
    assert [m.loadable for m in reg.list()] == [True, True, True, False]
    checks: list[object] = []
    real = checkpoint.check
    monkeypatch.setattr(checkpoint, "check", lambda *a, **k: checks.append(a[1]) or real(*a, **k))
    reg.list()
    reg.get("bad")
    assert checks == []  # nothing re-judged
    write_model(reg.folder, "bad", created_at="2026-01-01T00:00:00+00:00")  # fixed in place
    infos = reg.list()
    assert [Path(str(p)).name for p in checks] == ["bad.pt"]
    assert infos[0].id == "bad" and infos[0].loadable and infos[0].unloadable_reason is None
    assert reg.activate("bad").active and reg.load("bad").id == "bad"
