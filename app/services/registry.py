"""The models folder: one `<id>.pt` checkpoint per model, plus a small `ACTIVE` file.

Listing judges each checkpoint once per (mtime_ns, size, inode): its metadata is
read and checked with `checkpoint.check` (bounds and weight shapes, nothing
allocated), so the listing shows whether a model can be loaded, and why not,
without re-reading unchanged files or putting weights into the predictor.
Files that are no tickcast checkpoint at all (another torch file, stray bytes)
are left out of the listing; damaged or mis-described models are listed with
`loadable` False and the reason, and refused by `activate`. Which model is
active is the text of `ACTIVE`, replaced atomically (temp file + os.replace),
so a crash leaves the old choice or the new one.
Model ids are checked against `checkpoint.MODEL_ID` before any path is built,
so an id can never name a file outside the folder.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from app.atomic import atomic_write
from app.ml import checkpoint
from app.ml.meta import MetaSummary
from app.services.jobs.states import Activation

log = logging.getLogger(__name__)

ACTIVE_FILE = "ACTIVE"
SUFFIX = ".pt"


class RegistryError(Exception):
    """Base of the registry's errors; messages are meant for a person."""


class InvalidModelId(RegistryError, ValueError):
    """The id is not a valid model id (empty, too long, a path, a hidden name...)."""


class UnknownModel(RegistryError, LookupError):
    """No model with that id in the folder."""


class ModelInUse(RegistryError):
    """The model is active and cannot be deleted."""


class UnloadableModel(checkpoint.CheckpointError, UnknownModel):
    """The file exists but cannot be used as a model; the message says why.

    A CheckpointError first (the API answers 422 with the reason), and an UnknownModel for
    callers that treat "no usable model by that id" alike."""


class CannotActivate(UnloadableModel):
    """`activate` refused a model whose file fails its checks; ACTIVE is unchanged."""


@dataclass(frozen=True)
class ModelInfo:
    id: str
    path: Path
    size_bytes: int
    meta: MetaSummary  # empty when the file is too damaged to read
    active: bool
    loadable: bool = True
    unloadable_reason: str | None = None


@dataclass(frozen=True)
class _Verdict:
    key: tuple[int, int, int]  # (mtime_ns, size, inode) of the file judged: an atomic
    # replace changes the inode even when size and mtime happen to match
    meta: MetaSummary
    reason: str | None  # None: the file passed every check
    stray: bool = False  # no tickcast checkpoint at all: not listed as a model


class Registry:
    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder = self.folder.resolve()
        self._cache: dict[str, _Verdict] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------ ids and paths

    def path(self, model_id: str) -> Path:
        """folder/<id>.pt for a valid id; InvalidModelId otherwise (nothing is touched)."""
        if not isinstance(model_id, str) or not checkpoint.MODEL_ID.fullmatch(model_id):
            shown = repr(model_id)[:80]
            raise InvalidModelId(
                f"invalid model id {shown}: use 1-128 characters of letters, digits, '.', '_' "
                "or '-', starting with a letter or digit"
            )
        p = (self.folder / f"{model_id}{SUFFIX}").resolve()
        if p.parent != self.folder:
            raise InvalidModelId(f"invalid model id {model_id!r}: it must name a file in the models folder")
        return p

    def _existing(self, model_id: str) -> Path:
        p = self.path(model_id)
        if not p.is_file():
            raise UnknownModel(f"no model {model_id!r}")
        return p

    # ------------------------------------------------------------ metadata

    def _judge(self, p: Path) -> _Verdict:
        """The verdict on one file, re-judged only when its (mtime_ns, size, inode) changed."""
        st = p.stat()
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            hit = self._cache.get(p.name)
        if hit is not None and hit.key == key:
            return hit
        verdict = _judge_file(p, key)
        if verdict.reason is not None:
            log.warning(
                "%s: %s",
                "skipping a file that is no model" if verdict.stray else "unloadable model",
                verdict.reason,
            )
        with self._lock:
            self._cache[p.name] = verdict
        return verdict

    def _info(self, model_id: str, p: Path, active: str | None) -> ModelInfo:
        """A listed model's info; UnloadableModel for a file that is no model at all."""
        v = self._judge(p)
        if v.stray:
            raise UnloadableModel(
                f"model {model_id!r} is not usable: {v.reason}; delete the file "
                "or replace it with a tickcast checkpoint"
            )
        return ModelInfo(model_id, p, v.key[1], v.meta, model_id == active, v.reason is None, v.reason)

    def list(self) -> list[ModelInfo]:
        """Every model file, loadable or not, newest first (by metadata created_at, then file
        mtime); files that are no tickcast checkpoint at all are left out (and logged once)."""
        active = self.active_id()
        out: list[ModelInfo] = []
        seen: set[str] = set()
        for p in self.folder.glob(f"*{SUFFIX}"):
            mid = p.name[: -len(SUFFIX)]
            if not checkpoint.MODEL_ID.fullmatch(mid) or not p.is_file():
                continue  # temp files (".x.pt.tmp") and odd names are not models
            seen.add(p.name)
            try:
                out.append(self._info(mid, p, active))
            except UnloadableModel:
                continue  # logged when judged
            except OSError as e:  # gone or unreadable between glob and stat
                log.warning("skipping unreadable model file %s: %s", p, e)
        with self._lock:
            for name in [n for n in self._cache if n not in seen]:
                del self._cache[name]

        def key(m: ModelInfo) -> tuple[str, float]:
            try:
                mtime = m.path.stat().st_mtime
            except OSError:
                mtime = 0.0
            return (m.meta.created_at or "", mtime)

        out.sort(key=key, reverse=True)
        return out

    def get(self, model_id: str) -> ModelInfo:
        """The model's info, `loadable` False with the reason if it cannot be loaded."""
        return self._info(model_id, self._existing(model_id), self.active_id())

    # ------------------------------------------------------------ active model

    def empty(self) -> bool:
        """No model at all, known without judging one (start-up asks it)."""
        return not any(self.folder.glob(f"*{SUFFIX}"))

    def active_id(self) -> str | None:
        """The active model's id, or None when none is set or its file is gone."""
        try:
            text = (self.folder / ACTIVE_FILE).read_text(encoding="utf-8").strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, UnicodeDecodeError) as e:
            log.warning("cannot read %s: %s", self.folder / ACTIVE_FILE, e)
            return None
        if not text or not checkpoint.MODEL_ID.fullmatch(text):
            return None
        return text if (self.folder / f"{text}{SUFFIX}").is_file() else None

    def activate(self, model_id: str) -> ModelInfo:
        """Make `model_id` the active model; CannotActivate (an UnloadableModel; ACTIVE
        unchanged) unless its file passes every check."""
        p = self._existing(model_id)
        v = self._judge(p)
        if v.reason is not None:
            raise CannotActivate(f"model {model_id!r} cannot be activated: {v.reason}")
        self._write_active(model_id)
        return ModelInfo(model_id, p, v.key[1], v.meta, True)

    def _write_active(self, model_id: str) -> None:
        with atomic_write(self.folder / ACTIVE_FILE, "w", encoding="utf-8") as f:
            f.write(model_id + "\n")

    def delete(self, model_id: str) -> None:
        p = self._existing(model_id)
        if model_id == self.active_id():
            raise ModelInUse(f"model {model_id!r} is active; activate another model before deleting it")
        p.unlink(missing_ok=True)
        with self._lock:
            self._cache.pop(p.name, None)

    # ------------------------------------------------------------ sharing (nothing to do for a folder)

    def publish(self, path: Path) -> None:
        """Share the checkpoint a training job wrote at `path` with every replica. The folder is its
        own truth, so a file written in it is listed already (PgRegistry uploads it)."""

    def withdraw(self, model_id: str) -> None:
        """Take back what `publish` shared, for a job that failed after it; its writer removes the
        file itself, so the folder has nothing to do (PgRegistry deletes the upload)."""

    def watch(
        self, on_active: Callable[[str | None], None], on_deleted: Callable[[str], None] | None = None
    ) -> None:
        """Hear of activations and deletions made elsewhere. A folder is one process's, so there
        are none to hear (PgRegistry listens to the database every replica writes)."""

    def close(self) -> None:
        """Release what the registry holds: nothing for a folder (PgRegistry: its connections)."""

    def load(self, model_id: str, device: str | torch.device = "cpu") -> checkpoint.Model:
        """The model on `device`; UnloadableModel (a CheckpointError) if the file is unusable."""
        p = self._existing(model_id)
        try:
            model = checkpoint.load(p, device)
        except Exception as e:  # checkpoint.load raises only CheckpointError; OSError if the file went
            reason = str(e) if isinstance(e, checkpoint.CheckpointError) else f"{p}: {e}"
            raise UnloadableModel(f"model {model_id!r} cannot be loaded: {reason}") from e
        model.id = model_id  # the file name is the id the API knows it by
        return model


def _judge_file(p: Path, key: tuple[int, int, int]) -> _Verdict:
    """Read the file (memory-mapped) and check it without building its weights."""
    try:
        payload = checkpoint.read(p, map_location="cpu", mmap=True)
    except checkpoint.NotACheckpoint as e:
        return _Verdict(key, MetaSummary(), str(e), stray=True)
    except checkpoint.CheckpointError as e:
        return _Verdict(key, MetaSummary(), str(e))
    meta = MetaSummary.of(payload["meta"])
    try:
        checkpoint.check(payload, p)
    except checkpoint.CheckpointError as e:
        return _Verdict(key, meta, str(e))
    return _Verdict(key, meta, None)


def should_promote(
    policy: Activation, challenger_val_auc: float | None, incumbent_val_auc: float | None
) -> tuple[bool, str]:
    """Whether a finished job's model becomes active, and why (for the job record).

    For `if_better` both AUCs must be measured by the caller on the same validation data.
    """
    try:
        policy = Activation(policy)
    except ValueError as e:
        raise ValueError(
            f"promotion policy must be never, always, if_better or if_better_live, got {policy!r}"
        ) from e
    if policy is Activation.NEVER:
        return False, "policy is 'never'"
    if policy is Activation.IF_BETTER_LIVE:
        return False, "scored in shadow on live ticks; activated when its live log loss is shown lower"
    if policy is Activation.ALWAYS:
        return True, "policy is 'always'"
    if challenger_val_auc is None or not math.isfinite(challenger_val_auc):
        return False, "the new model has no usable validation AUC"
    if incumbent_val_auc is None or not math.isfinite(incumbent_val_auc):
        return True, "there is no active model to beat"
    if challenger_val_auc > incumbent_val_auc:
        return True, (
            f"validation AUC {challenger_val_auc:.4f} beats the active model's {incumbent_val_auc:.4f}"
        )
    return False, (
        f"validation AUC {challenger_val_auc:.4f} does not beat the active model's {incumbent_val_auc:.4f}"
    )
