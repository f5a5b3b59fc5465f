"""Start-up housekeeping: what a killed process left behind is removed or given a history.

A kill -9 (or a power cut) can strike between any two steps of the service's
writes, and two kinds of leftovers outlived every restart:

- the `.<name>.<random>.tmp` file of an `atomic_write` whose rename never came
  (a checkpoint's is tens of MB). Only this service writes in the models folder
  and beside the store, so at start-up such a file is nobody's, unless it is
  still being written (a replica that is saving right now): files touched in
  the last `MIN_AGE_S` seconds are left alone;
- a model that a training job saved before the job's result was recorded. The
  worker puts the job's id in the checkpoint's metadata (`ModelMeta.job_id`), so
  `job_recovery` (at `JobManager.start`) can find it here and let that job's record
  claim it: every model can be traced to the job that made it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from app.services.registry import ModelInfo, Registry

log = logging.getLogger(__name__)

MIN_AGE_S = 2.0
# atomic_write's names: tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp"), 8 random characters
TEMP_FILE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def remove_stale_temp_files(
    folders: Iterable[str | Path], *, min_age_s: float = MIN_AGE_S
) -> list[tuple[Path, int]]:
    """Delete atomic_write's leftovers in `folders` (not below them); returns (path, bytes) of each.

    Failures are logged, never raised: a leftover is no reason not to start.
    """
    removed: list[tuple[Path, int]] = []
    now = time.time()
    for folder in dict.fromkeys(Path(f) for f in folders):
        try:
            entries = list(folder.iterdir())
        except FileNotFoundError:
            continue
        except OSError as e:
            log.warning("housekeeping: cannot list %s: %s", folder, e)
            continue
        for p in entries:
            if not TEMP_FILE.fullmatch(p.name):
                continue
            try:
                st = p.lstat()
                if not p.is_file() or p.is_symlink() or now - st.st_mtime < min_age_s:
                    continue
                p.unlink()
            except FileNotFoundError:
                continue  # its writer renamed or removed it meanwhile
            except OSError as e:
                log.warning("housekeeping: cannot remove the stale temporary file %s: %s", p, e)
                continue
            removed.append((p, st.st_size))
            log.warning(
                "housekeeping: removed %s (%s), left by a write that never finished", p, _size(st.st_size)
            )
    return removed


def at_start(models_dir: str | Path, store_path: str | Path) -> list[tuple[Path, int]]:
    """Before the store and the models are opened: remove the temporary files a killed
    process left in the models folder and beside the store."""
    folders = [Path(models_dir)]
    if str(store_path) != ":memory:":
        folders.append(Path(store_path).parent)
    return remove_stale_temp_files(folders)


def models_by_job(registry: Registry) -> dict[str, ModelInfo]:
    """The readable models that a training job saved, by the job's id."""
    out: dict[str, ModelInfo] = {}
    for info in registry.list():
        if info.meta.job_id:
            out[info.meta.job_id] = info
    return out


def claimed_result(info: ModelInfo, reason: str) -> dict[str, Any]:
    """A job result for a model the job saved but never reported: what its checkpoint knows.

    The comparison with the active model never ran, so the model was not activated;
    `reason` says so and what to do.
    """
    meta = info.meta
    return {
        "model_id": info.id,
        "metrics": meta.metrics,
        "challenger_val_auc": meta.val_auc,
        "incumbent_id": None,
        "incumbent_val_auc": None,
        "best_epoch": meta.best_epoch,
        "epochs": meta.epochs,
        "activated": False,
        "reason": reason,
    }


def not_compared(model_id: str) -> str:
    return (
        f"model {model_id} was saved, but never compared with the active model nor activated; "
        f"activate it by hand (POST /models/{model_id}/activate) or delete it if unwanted"
    )


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n} bytes"
