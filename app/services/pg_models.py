"""Models shared through PostgreSQL: the database holds every checkpoint and the active pointer, so
every replica and every training worker, on any machine, sees the same models; the models folder is
only this machine's cache of their bytes.

- `models` keeps each checkpoint's bytes with their size and sha256; `models_active` one row, the
  active id, a foreign key to `models`: an active model cannot be deleted and a deleted one cannot
  become active, whichever transaction commits first.
- A blob is fetched into the cache folder (atomically) when the file there is missing or does not
  hash to the recorded sha256, and what was fetched is hashed again before it is written: bytes
  damaged in the database are never trusted, the model is listed unloadable with the reason and
  refused by `activate`.
- A cached file is judged by `checkpoint.check` and loaded with weights_only=True exactly as the
  folder's `Registry` judges and loads its own files, with the same errors.
- `activate` writes the pointer and `NOTIFY tickcast_models, '<id>'` in one transaction; `delete`
  notifies `deleted:<id>`. `watch` listens (`app.pg.Listener`), so every replica swaps to a model
  activated elsewhere and drops a model deleted elsewhere from its cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app import pg
from app.atomic import atomic_write
from app.database import redact
from app.ml import checkpoint
from app.ml.meta import MetaSummary
from app.services.registry import (
    SUFFIX,
    CannotActivate,
    ModelInfo,
    ModelInUse,
    Registry,
    UnknownModel,
    UnloadableModel,
)

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

CHANNEL = "tickcast_models"
DELETED = "deleted:"  # a deletion's payload is this and the id (no model id holds a ':')
VERSION_TABLE = "models_schema"
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE models (id TEXT PRIMARY KEY, created_at TIMESTAMPTZ NOT NULL DEFAULT now(), "
        "size BIGINT NOT NULL, sha256 TEXT NOT NULL, body BYTEA NOT NULL)",
        # weights do not compress: kept out of line as they are, no compression tried on each write
        "ALTER TABLE models ALTER COLUMN body SET STORAGE EXTERNAL",
        "CREATE TABLE models_active (one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one), "
        "model_id TEXT NOT NULL REFERENCES models (id), changed_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    ),
)
_UPSERT = (
    "INSERT INTO models (id, size, sha256, body) VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO UPDATE "
    "SET size = EXCLUDED.size, sha256 = EXCLUDED.sha256, body = EXCLUDED.body, created_at = now()"
)
# only while the model still holds the bytes just judged: not a model replaced or deleted meanwhile
_POINT = (
    "INSERT INTO models_active (one, model_id, changed_at) SELECT TRUE, id, now() FROM models "
    "WHERE id = %s AND sha256 = %s ON CONFLICT (one) DO UPDATE "
    "SET model_id = EXCLUDED.model_id, changed_at = EXCLUDED.changed_at"
)


@dataclass(frozen=True)
class _Row:
    id: str
    size: int
    sha256: str
    uploaded: float  # unix seconds: the listing's order among models of the same created_at


class _Damaged(Exception):
    """The database's bytes for a model do not hash to the sha256 recorded when it was published."""


class PgRegistry(Registry):
    """The registry of a PostgreSQL deployment: `Registry`'s methods, answers and errors, over the
    database, with `folder` as the cache of the blobs (`publish` uploads a job's checkpoint)."""

    def __init__(self, folder: str | os.PathLike[str], url: str) -> None:
        super().__init__(folder)
        self.url = url
        self._db_lock = threading.Lock()  # one connection, used by the API, its threads, the listener
        self._conn: psycopg.Connection[Any] | None = None
        # cache file name -> (its (mtime_ns, size, inode), the sha256 it hashed to): hashed once a version
        self._hashes: dict[str, tuple[tuple[int, int, int], str]] = {}
        self._listener: pg.Listener | None = None
        self._closing = threading.Event()
        try:
            with self._db() as conn:
                pg.migrate(conn, VERSION_TABLE, MIGRATIONS, "models")
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ the database

    @contextmanager
    def _db(self) -> Iterator[psycopg.Connection[Any]]:
        """The registry's connection, opened again if it was lost, held for one operation."""
        with self._db_lock:
            conn = self._conn
            if conn is None or conn.closed or conn.broken:
                if conn is not None:
                    conn.close()
                conn = self._conn = pg.connect(self.url, part="models", autocommit=True)
            yield conn

    def _rows(self, sql: str, params: tuple[Any, ...] = (), *, binary: bool = False) -> list[tuple[Any, ...]]:
        """A read's rows; asked once more on a new connection when the old one was lost (the server
        restarted since the last call), so a replica does not fail one request per restart."""
        try:
            with self._db() as conn:
                return conn.execute(sql, params, binary=binary).fetchall()
        except pg.errors() as e:
            if self._conn is not None and not self._conn.broken:
                raise
            log.warning("models: the connection to %s was lost (%s); reconnecting", redact(self.url), e)
        with self._db() as conn:
            return conn.execute(sql, params, binary=binary).fetchall()

    def _published(self, model_id: str | None = None) -> list[_Row]:
        where, params = ("WHERE id = %s", (model_id,)) if model_id is not None else ("", ())
        rows = self._rows(
            f"SELECT id, size, sha256, extract(epoch FROM created_at) FROM models {where}", params
        )
        return [_Row(str(r[0]), int(r[1]), str(r[2]), float(r[3])) for r in rows]

    def _row(self, model_id: str) -> _Row:
        self.path(model_id)  # InvalidModelId before the database is asked
        rows = self._published(model_id)
        if not rows:
            raise UnknownModel(f"no model {model_id!r}")
        return rows[0]

    # ------------------------------------------------------------ the cache folder

    def _synced(self, row: _Row) -> Path:
        """The cache file holding exactly the published bytes: the one there when it hashes to the
        row's sha256 (each version of a file is hashed once), else fetched; _Damaged when what the
        database holds is not what was published."""
        p = self.path(row.id)
        key = _stat_key(p)
        if key is not None:
            with self._lock:
                known = self._hashes.get(p.name)
            sha = known[1] if known is not None and known[0] == key else _sha256_of(p)
            self._remember(p, key, sha)
            if sha == row.sha256:
                return p
        self._fetch(row.id, p)
        return p

    def _fetch(self, model_id: str, p: Path) -> None:
        rows = self._rows("SELECT body, sha256 FROM models WHERE id = %s", (model_id,), binary=True)
        if not rows:
            raise UnknownModel(f"no model {model_id!r}")  # deleted since it was listed
        body, recorded = bytes(rows[0][0]), str(rows[0][1])
        got = hashlib.sha256(body).hexdigest()
        if got != recorded:
            raise _Damaged(
                f"its bytes in the database are damaged: they hash to sha256 {got[:16]}..., not the "
                f"{recorded[:16]}... recorded when it was published; publish it again or delete it"
            )
        with atomic_write(p) as f:
            f.write(body)
        key = _stat_key(p)
        if key is not None:
            self._remember(p, key, got)

    def _remember(self, p: Path, key: tuple[int, int, int], sha: str) -> None:
        with self._lock:
            self._hashes[p.name] = (key, sha)

    def _drop_cached(self, model_id: str) -> None:
        """A model deleted (here or on another replica) leaves this machine's cache too."""
        if not checkpoint.MODEL_ID.fullmatch(model_id):
            return
        p = self.path(model_id)
        p.unlink(missing_ok=True)
        with self._lock:
            self._hashes.pop(p.name, None)
            self._cache.pop(p.name, None)

    def _existing(self, model_id: str) -> Path:
        """The model's cached file (fetched if need be): `Registry.load` loads it as its own."""
        row = self._row(model_id)
        try:
            return self._synced(row)
        except _Damaged as e:
            raise UnloadableModel(f"model {model_id!r} cannot be loaded: {e}") from None

    def _info_of(self, row: _Row, active: str | None) -> ModelInfo:
        try:
            p = self._synced(row)
        except _Damaged as e:
            log.warning("unloadable model %s: %s", row.id, e)
            return ModelInfo(
                row.id, self.path(row.id), row.size, MetaSummary(), row.id == active, False, str(e)
            )
        return self._info(row.id, p, active)

    # ------------------------------------------------------------ Registry's methods

    def list(self) -> list[ModelInfo]:
        """Every published model, loadable or not, newest first (by metadata created_at, then the
        upload); blobs that are no tickcast checkpoint at all are left out (and logged)."""
        active = self.active_id()
        rows = self._published()
        out: list[ModelInfo] = []
        for row in rows:
            try:
                out.append(self._info_of(row, active))
            except UnknownModel:  # no checkpoint at all (logged when judged), or deleted meanwhile
                continue
            except OSError as e:  # the cache folder cannot be written
                log.warning("skipping model %s: its cache file cannot be written: %s", row.id, e)
        names = {f"{r.id}{SUFFIX}" for r in rows}
        with self._lock:
            for cache in (self._cache, self._hashes):
                for name in [n for n in cache if n not in names]:
                    del cache[name]
        uploaded = {r.id: r.uploaded for r in rows}
        out.sort(key=lambda m: (m.meta.created_at or "", uploaded[m.id]), reverse=True)
        return out

    def get(self, model_id: str) -> ModelInfo:
        """The model's info, `loadable` False with the reason if it cannot be loaded."""
        return self._info_of(self._row(model_id), self.active_id())

    def empty(self) -> bool:
        return not self._rows("SELECT 1 FROM models LIMIT 1")

    def active_id(self) -> str | None:
        """The active model's id, or None when none was ever activated. A database that cannot
        answer raises (pg.errors()): that is no reason to think there is no model."""
        rows = self._rows("SELECT model_id FROM models_active")
        return str(rows[0][0]) if rows else None

    def activate(self, model_id: str) -> ModelInfo:
        """Make `model_id` the active model on every replica; CannotActivate (an UnloadableModel;
        the pointer unchanged) unless its bytes are intact and pass every check."""
        row = self._row(model_id)
        try:
            p = self._synced(row)
        except _Damaged as e:
            raise CannotActivate(f"model {model_id!r} cannot be activated: {e}") from None
        v = self._judge(p)
        if v.reason is not None:
            raise CannotActivate(f"model {model_id!r} cannot be activated: {v.reason}")
        fk = pg.driver().errors.ForeignKeyViolation
        try:
            with self._db() as conn, conn.transaction():
                pointed = conn.execute(_POINT, (row.id, row.sha256)).rowcount
                if pointed == 1:
                    pg.notify(conn, CHANNEL, row.id)  # delivered when (and only if) this commits
        except fk:
            pointed = 0
        if pointed != 1:
            raise UnknownModel(f"model {model_id!r} was deleted or replaced while it was checked; try again")
        return ModelInfo(model_id, p, v.key[1], v.meta, True)

    def delete(self, model_id: str) -> None:
        self.path(model_id)
        try:
            with self._db() as conn, conn.transaction():
                gone = conn.execute("DELETE FROM models WHERE id = %s", (model_id,)).rowcount
                if gone:
                    pg.notify(conn, CHANNEL, DELETED + model_id)
        except pg.driver().errors.ForeignKeyViolation:
            raise ModelInUse(
                f"model {model_id!r} is active; activate another model before deleting it"
            ) from None
        if not gone:
            raise UnknownModel(f"no model {model_id!r}")
        self._drop_cached(model_id)

    # ------------------------------------------------------------ sharing

    def publish(self, path: Path) -> None:
        """Upload the checkpoint a training job wrote at `path` (`<id>.pt`), on whatever machine it
        ran, so that every replica finds it; a model of that id already there is replaced."""
        path = Path(path)
        model_id = path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.name
        self.path(model_id)  # InvalidModelId before anything is read
        key = _stat_key(path)
        body = path.read_bytes()
        sha = hashlib.sha256(body).hexdigest()
        with self._db() as conn:
            conn.execute(_UPSERT, (model_id, len(body), sha, body))
        if key is not None and path.resolve() == self.path(model_id):
            self._remember(path.resolve(), key, sha)  # written in the cache: not hashed again

    def withdraw(self, model_id: str) -> None:
        """Delete what `publish` uploaded, for a job that failed or was cancelled after it; a model
        someone activated meanwhile is kept. Never raises: the job's own error is what matters."""
        try:
            self.delete(model_id)
        except UnknownModel:
            pass
        except ModelInUse:
            log.warning("model %s was activated before its job ended; kept", model_id)
        except Exception as e:
            log.warning(
                "could not withdraw model %s (%s); DELETE /models/%s removes it", model_id, e, model_id
            )

    def watch(
        self, on_active: Callable[[str | None], None], on_deleted: Callable[[str], None] | None = None
    ) -> None:
        """Hear every replica's activations and deletions: `on_active(id)` for each activation (None
        after the listener reconnected, and once when it first listens: re-read the active id,
        notifications may have been missed), `on_deleted(id)` after a model deleted elsewhere has
        left this cache. Both run in the listener's thread."""
        if self._listener is not None:
            raise RuntimeError("this registry is watched already")
        one_at_a_time = threading.Lock()  # the catch-up and the listener: the last read wins

        def hear(channel: str, payload: str | None) -> None:
            with one_at_a_time:
                if payload is None or not payload.startswith(DELETED):
                    on_active(payload)
                    return
                model_id = payload[len(DELETED) :]
                self._drop_cached(model_id)
                if on_deleted is not None:
                    on_deleted(model_id)

        self._closing.clear()
        self._listener = listener = pg.Listener(self.url, (CHANNEL,), hear, part="models-listen")
        listener.start()
        threading.Thread(
            target=self._catch_up, args=(listener, hear), name="models-catch-up", daemon=True
        ).start()

    def _catch_up(self, listener: pg.Listener, hear: Callable[[str, str | None], None]) -> None:
        """Once LISTEN is in place, one re-read: an activation committed between the owner's own
        read of the active id and then was notified to no one listening here."""
        while not self._closing.is_set():
            if listener.ready.wait(0.2):
                try:
                    hear(CHANNEL, None)
                except Exception:  # as the listener's own handler: logged, the watch goes on
                    log.exception("models: catching up with the active model failed")
                return

    def close(self) -> None:
        """Stop watching and close the connection (a later call opens a new one)."""
        self._closing.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        with self._db_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _stat_key(p: Path) -> tuple[int, int, int] | None:
    try:
        st = p.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _sha256_of(p: Path) -> str:
    """The file's sha256; "" (no blob's) when it went since it was seen: it is fetched again."""
    try:
        with p.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        return ""
