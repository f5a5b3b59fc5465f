"""Models in PostgreSQL: the registry's behaviour over the database, caches on several machines,
damaged blobs, activation and deletion heard by every replica, the schema's versions."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from app import pg
from app.market.sources import synthetic
from app.ml import checkpoint, features
from app.services import pg_models
from app.services.jobs import worker as job_worker
from app.services.jobs.spec import validate_spec
from app.services.model_store import open_registry
from app.services.pg_models import PgRegistry
from app.services.predictor import Predictor
from app.services.registry import (
    CannotActivate,
    InvalidModelId,
    ModelInUse,
    Registry,
    UnknownModel,
    UnloadableModel,
)
from tests.helpers.checkpoints import BAD, write_bad, write_model
from tests.helpers.jobs import spec

SWAP_WITHIN_S = 1.0


@pytest.fixture
def opened(pg_url: str, tmp_path: Path) -> Iterator[Callable[[str], PgRegistry]]:
    """Registries on this test's database, each with its own cache folder (a machine), closed after."""
    made: list[PgRegistry] = []

    def open_one(name: str) -> PgRegistry:
        r = PgRegistry(tmp_path / name / "models", pg_url)
        made.append(r)
        return r

    yield open_one
    for r in made:
        r.close()


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    """Where a training job writes its checkpoints before publishing them."""
    folder = tmp_path / "job"
    folder.mkdir()
    return folder


@pytest.fixture
def reg(opened: Callable[[str], PgRegistry], staging: Path) -> PgRegistry:
    r = opened("a")
    for mid, made, seed in (("old", "2024-01", 1), ("mid", "2024-06", 2), ("new", "2025-01", 3)):
        r.publish(write_model(staging, mid, created_at=f"{made}-01T00:00:00+00:00", seed=seed))
    return r


def stored(url: str, sql: str, params: tuple[object, ...] | None = None) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as c:
        cur = c.execute(sql, params)
        return cur.fetchall() if cur.description is not None else []


def wait_for(cond: Callable[[], bool], within_s: float = SWAP_WITHIN_S) -> float:
    """Seconds until `cond()` held; fails past `within_s`."""
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < within_s, f"not within {within_s} s"
        time.sleep(0.005)
    return time.monotonic() - t0


def test_open_registry_picks_the_database_for_a_postgresql_target(pg_url: str, tmp_path: Path) -> None:
    r = open_registry(tmp_path / "m", pg_url)
    try:
        assert isinstance(r, PgRegistry) and r.list() == [] and r.active_id() is None
    finally:
        r.close()
    assert type(open_registry(tmp_path / "m", str(tmp_path / "t.db"))) is Registry


def test_list_newest_first_with_meta(reg: PgRegistry) -> None:
    infos = reg.list()
    assert [m.id for m in infos] == ["new", "mid", "old"]
    assert all(m.size_bytes > 0 and m.path.parent == reg.folder and not m.active for m in infos)
    assert infos[0].meta.seq_len == 8 and infos[0].meta.val_auc == 0.55
    assert reg.get("mid").meta.created_at == "2024-06-01T00:00:00+00:00"


def test_the_database_is_the_truth_and_records_each_blobs_sha256(reg: PgRegistry, staging: Path) -> None:
    rows = dict(stored(reg.url, "SELECT id, sha256 FROM models"))
    assert rows == {m: hashlib.sha256((staging / f"{m}.pt").read_bytes()).hexdigest() for m in rows}
    write_model(reg.folder, "local-only", created_at="2030-01-01T00:00:00+00:00")  # never published
    assert "local-only" not in [m.id for m in reg.list()]
    with pytest.raises(UnknownModel):
        reg.activate("local-only")


def test_two_machines_see_the_same_models_and_active_pointer(
    reg: PgRegistry, opened: Callable[[str], PgRegistry], staging: Path
) -> None:
    other = opened("b")
    assert [m.id for m in other.list()] == ["new", "mid", "old"]
    assert (other.folder / "mid.pt").read_bytes() == (staging / "mid.pt").read_bytes()  # fetched
    reg.activate("mid")
    assert other.active_id() == "mid" and [m.id for m in other.list() if m.active] == ["mid"]
    assert other.load("mid").id == "mid"
    other.activate("new")
    assert reg.active_id() == "new" and reg.get("new").active
    other.delete("old")
    assert [m.id for m in reg.list()] == ["new", "mid"] and not (other.folder / "old.pt").exists()
    reg.publish(write_model(staging, "newest", created_at="2026-01-01T00:00:00+00:00"))
    assert other.list()[0].id == "newest"


def test_activate_and_delete_refusals_change_nothing(reg: PgRegistry) -> None:
    assert reg.active_id() is None
    info = reg.activate("mid")
    assert info.active and reg.active_id() == "mid"
    with pytest.raises(ModelInUse):
        reg.delete("mid")
    for call in (reg.get, reg.activate, reg.delete, reg.load):
        with pytest.raises(UnknownModel):
            call("missing")
    assert reg.active_id() == "mid" and [m.id for m in reg.list()] == ["new", "mid", "old"]
    reg.delete("old")
    with pytest.raises(UnknownModel):
        reg.delete("old")


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".hidden", "x" * 129, "a\x00b", "-lead", "ü"])
def test_invalid_ids_change_nothing(reg: PgRegistry, bad: str) -> None:
    reg.activate("mid")
    for call in (reg.path, reg.get, reg.activate, reg.delete, reg.load):
        with pytest.raises(InvalidModelId):
            call(bad)
    assert reg.active_id() == "mid" and len(stored(reg.url, "SELECT id FROM models")) == 3


def test_a_lost_connection_is_opened_again_without_failing_a_read(reg: PgRegistry) -> None:
    reg.activate("mid")
    own = "FROM pg_stat_activity WHERE application_name ~ '^tickcast-models-[0-9]+$'"
    assert stored(reg.url, f"SELECT pg_terminate_backend(pid) {own}") == [(True,)]  # a server restart
    assert reg.active_id() == "mid" and [m.id for m in reg.list()] == ["new", "mid", "old"]


def test_load_scores_windows(reg: PgRegistry) -> None:
    m = reg.load("mid", "cpu")
    assert m.id == "mid" and m.seq_len == 8
    p = m.proba(np.zeros((3, 8, len(features.FEATURES)), np.float32))
    assert p.shape == (3,) and np.all((p > 0) & (p < 1))


@pytest.mark.parametrize("case", list(BAD))
def test_unloadable_blobs_are_listed_with_the_reason(reg: PgRegistry, staging: Path, case: str) -> None:
    reg.publish(write_bad(staging, "bad", case))
    reg.activate("mid")
    infos = {m.id: m for m in reg.list()}
    assert set(infos) == {"new", "mid", "old", "bad"}
    assert not infos["bad"].loadable and BAD[case] in (infos["bad"].unloadable_reason or "")
    assert all(m.loadable for k, m in infos.items() if k != "bad")
    with pytest.raises(CannotActivate, match="cannot be activated") as e:
        reg.activate("bad")
    assert BAD[case] in str(e.value) and isinstance(e.value, checkpoint.CheckpointError)
    with pytest.raises(UnloadableModel, match="cannot be loaded"):
        reg.load("bad")
    assert reg.active_id() == "mid"


def test_a_blob_that_is_no_checkpoint_is_left_out(reg: PgRegistry, staging: Path) -> None:
    (staging / "broken.pt").write_bytes(b"not a torch file")
    reg.publish(staging / "broken.pt")
    assert [m.id for m in reg.list()] == ["new", "mid", "old"]
    with pytest.raises(UnknownModel):
        reg.activate("broken")
    assert reg.active_id() is None


def damage(url: str, model_id: str) -> None:
    """Flip one byte of the stored blob, its recorded sha256 left as published."""
    stored(
        url,
        "UPDATE models SET body = set_byte(body, 200, get_byte(body, 200) # 255) WHERE id = %s",
        (model_id,),
    )


def test_a_blob_damaged_in_the_database_is_refused(
    reg: PgRegistry, opened: Callable[[str], PgRegistry]
) -> None:
    reg.activate("new")
    damage(reg.url, "mid")
    fresh = opened("b")  # a machine without the model in its cache
    [mid] = [m for m in fresh.list() if m.id == "mid"]
    assert (
        not mid.loadable and "damaged" in (mid.unloadable_reason or "") and "sha256" in mid.unloadable_reason
    )
    assert not fresh.get("mid").loadable
    with pytest.raises(CannotActivate, match="damaged"):
        fresh.activate("mid")
    with pytest.raises(UnloadableModel, match="damaged"):
        fresh.load("mid")
    assert not (fresh.folder / "mid.pt").exists()  # the unverified bytes never reach the cache
    assert fresh.active_id() == "new" and fresh.load("old").id == "old"


def test_a_changed_cache_file_is_fetched_again(reg: PgRegistry, staging: Path) -> None:
    reg.load("mid")
    cached = reg.path("mid")
    cached.write_bytes(cached.read_bytes()[:500])  # damaged on this machine's disk
    assert reg.get("mid").loadable and reg.load("mid").id == "mid"
    assert cached.read_bytes() == (staging / "mid.pt").read_bytes()


def test_a_job_that_fails_after_publishing_withdraws_its_model(reg: PgRegistry, staging: Path) -> None:
    reg.publish(write_model(staging, "job-model", created_at="2026-01-01T00:00:00+00:00"))
    reg.withdraw("job-model")
    reg.withdraw("never-published")  # nothing to take back: no error either
    assert [m.id for m in reg.list()] == ["new", "mid", "old"]
    reg.activate("mid")
    reg.withdraw("mid")  # activated by hand meanwhile: kept
    assert reg.active_id() == "mid"


def test_the_folder_registry_shares_nothing(tmp_path: Path) -> None:
    r = Registry(tmp_path / "models")
    path = write_model(r.folder, "m", created_at="2024-01-01T00:00:00+00:00")
    r.publish(path)
    r.watch(lambda _: None)
    r.withdraw("m")
    r.close()
    assert [m.id for m in r.list()] == ["m"]


class Sent:
    """A worker's queue, kept."""

    def __init__(self) -> None:
        self.items: list[tuple[str, object]] = []

    def put(self, item: tuple[str, object]) -> None:
        self.items.append(item)


def test_a_training_worker_on_another_machine_publishes_its_model(
    reg: PgRegistry, opened: Callable[[str], PgRegistry], tmp_path: Path
) -> None:
    reg.activate("mid")
    sent, worker_dir = Sent(), tmp_path / "worker" / "models"
    result = job_worker._train(validate_spec(spec()), reg.url, str(worker_dir), 1, sent, lambda: False)
    made = result["model_id"]
    assert ("saved", made) in sent.items
    assert result["incumbent_id"] == "mid" and result["incumbent_val_auc"] is not None  # the database's
    elsewhere = opened("api")
    assert elsewhere.get(made).loadable and not elsewhere.get(made).active
    assert elsewhere.path(made).read_bytes() == (worker_dir / f"{made}.pt").read_bytes()


def test_a_worker_cancelled_after_publishing_takes_its_model_back(reg: PgRegistry, tmp_path: Path) -> None:
    sent, worker_dir = Sent(), tmp_path / "worker" / "models"

    def cancelled_once_saved() -> bool:
        return any(kind == "saved" for kind, _ in sent.items)

    with pytest.raises(Exception, match="cancelled while comparing"):
        job_worker._train(validate_spec(spec()), reg.url, str(worker_dir), 1, sent, cancelled_once_saved)
    assert [m.id for m in reg.list()] == ["new", "mid", "old"] and list(worker_dir.glob("*.pt")) == []


# ---------------------------------------------------------------- replicas


def serving(reg: PgRegistry) -> Predictor:
    """A replica's predictor, watching the registry as `Services.start` wires it."""
    p = Predictor(reg, "cpu", window_ms=0.0)
    p.load_active()
    reg.watch(p.follow, p.forget)
    return p


def test_an_activation_reaches_another_replica_within_a_second_without_a_failed_request(
    reg: PgRegistry, opened: Callable[[str], PgRegistry]
) -> None:
    reg.activate("old")
    here, there = Predictor(reg, "cpu"), serving(opened("b"))
    assert there.model is not None and there.model.id == "old"
    ticks = synthetic.generate(200, seed=4)

    async def go() -> tuple[list[str], float]:
        answered: list[str] = []
        stop = asyncio.Event()

        async def requests() -> None:
            while not stop.is_set():
                answered.append((await there.predict(ticks)).model_id)  # any failure fails the test
                await asyncio.sleep(0.001)

        loop = asyncio.create_task(requests())
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        await asyncio.to_thread(here.activate, "new")
        while answered[-1] != "new" and time.monotonic() - t0 < 3 * SWAP_WITHIN_S:
            await asyncio.sleep(0.002)
        took = time.monotonic() - t0
        await asyncio.sleep(0.05)
        stop.set()
        await loop
        await there.stop()
        return answered, took

    answered, took = asyncio.run(go())
    assert took < SWAP_WITHIN_S, f"the other replica served the new model after {took:.3f} s"
    switch = answered.index("new")
    assert set(answered[:switch]) == {"old"} and set(answered[switch:]) == {"new"}


def test_a_missed_notification_is_caught_up_after_a_reconnect(
    reg: PgRegistry, opened: Callable[[str], PgRegistry]
) -> None:
    reg.activate("old")
    there = serving(opened("b"))
    listener = (
        "FROM pg_stat_activity WHERE application_name LIKE 'tickcast-models-listen%'"
        " AND datname = current_database()"
    )
    wait_for(lambda: bool(stored(reg.url, f"SELECT 1 {listener}")))
    stored(reg.url, f"SELECT pg_terminate_backend(pid) {listener}")
    reg.activate("mid")  # while the listener is gone, or just back: it ends on "mid" either way
    wait_for(lambda: there.model is not None and there.model.id == "mid", within_s=5.0)


def test_a_deletion_leaves_the_other_replicas_caches(
    reg: PgRegistry, opened: Callable[[str], PgRegistry]
) -> None:
    reg.activate("new")
    other = opened("b")
    there = serving(other)
    ticks = synthetic.generate(100, seed=5)

    async def go() -> float:
        assert (await there.predict(ticks, model_id="old")).model_id == "old"  # loaded, kept in memory
        assert other.path("old").exists()
        await asyncio.to_thread(reg.delete, "old")
        t0 = time.monotonic()
        while True:  # answered from the predictor's memory until the deletion is heard
            try:
                await there.predict(ticks, model_id="old")
            except UnknownModel:
                break
            assert time.monotonic() - t0 < SWAP_WITHIN_S
            await asyncio.sleep(0.005)
        await there.stop()
        return time.monotonic() - t0

    asyncio.run(go())
    assert not other.path("old").exists()


def test_a_model_activated_elsewhere_that_is_damaged_leaves_the_old_one_serving(
    reg: PgRegistry, opened: Callable[[str], PgRegistry]
) -> None:
    reg.activate("old")
    reg.load("mid")  # cached on this machine, verified: it can still be activated here
    damage(reg.url, "mid")
    there = serving(opened("b"))
    reg.activate("mid")
    time.sleep(0.3)
    assert there.model is not None and there.model.id == "old" and "damaged" in (there.load_error or "")


# ---------------------------------------------------------------- schema


def test_the_schema_is_created_then_a_newer_one_refused(pg_url: str, tmp_path: Path) -> None:
    assert stored(pg_url, "SELECT to_regclass('models')") == [(None,)]
    r = PgRegistry(tmp_path / "m", pg_url)  # version 0 (nothing) -> the newest
    r.close()
    newest = len(pg_models.MIGRATIONS)
    assert stored(pg_url, "SELECT version FROM models_schema") == [(newest,)]
    columns = stored(pg_url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'models'")
    assert {c for (c,) in columns} == {"id", "created_at", "size", "sha256", "body"}
    PgRegistry(tmp_path / "m", pg_url).close()  # the newest again: nothing to do
    stored(pg_url, "UPDATE models_schema SET version = %s", (newest + 1,))
    with pytest.raises(pg.SchemaTooNew, match="upgrade tickcast"):
        PgRegistry(tmp_path / "m", pg_url)
