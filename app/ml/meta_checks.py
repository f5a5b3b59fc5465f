"""Judging a model file's metadata before anything is built from it.

Every value `nets.build`, the normaliser, the calibrator and `Model` read is
typed and bounded here, with the reason a person reads when a file is refused.
Split out of `checkpoint.py` so that the file format (save, read, load) and the
rules a file must meet each fit in one screenful.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from typing import Any, TypeGuard

from app.ml import calibration, features, nets, rows
from app.ml.meta import META_VERSION, MetaError, ModelMeta

# What loading accepts, beyond what training produces: the API trains at most seq_len 512,
# hidden_size 1024 and 16 layers; the CLI is unbounded but larger nets are impractical on the
# hardware tickcast targets. The headroom keeps any plausible CLI model loadable while a number
# such as hidden_size 10**8 (petabytes of weights) is refused before anything is built.
MAX_SEQ_LEN = 100_000
MAX_HIDDEN_SIZE = 4096
MAX_NUM_LAYERS = 64
# The largest net the API can train (16-layer LSTM/PureRNN, hidden 1024) has ~134M parameters;
# twice that, 1 GiB of float32, is the most a checkpoint may describe.
MAX_PARAMETERS = 2**28
# The keyword arguments of nets.build that metadata may set, with their bounds.
INT_HPARAMS: dict[str, tuple[int, int]] = {
    "hidden_size": (1, MAX_HIDDEN_SIZE),
    "num_layers": (1, MAX_NUM_LAYERS),
    "bins": (1, 1024),
    "recent": (1, 1024),
    "ramped": (1, 1024),
    "members": (1, 64),
}
FLOAT_HPARAMS: dict[str, tuple[float, float]] = {"dropout": (0.0, 1.0)}  # [low, high)


REQUIRED_META = ("arch", "hparams", "seq_len", "features", "norm", "logit_offset", "threshold")


class CheckpointError(ValueError):
    """A file that cannot be used as a model; the message says why and what to do."""


def first_line(e: BaseException) -> str:
    """An exception's first line, without terminal colour codes, at most 200 characters."""
    first = (str(e).splitlines() or [type(e).__name__])[0] or type(e).__name__
    return re.sub(r"\x1b\[[0-9;]*m", "", first)[:200]


def check_meta(meta: dict[str, Any], path: str | os.PathLike[str]) -> ModelMeta:
    """Every value `build_net`, the normaliser and `Model` read, typed and within bounds; the
    metadata, typed, when it passes."""
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise CheckpointError(f"{path} metadata lacks {', '.join(missing)}: retrain the model")
    _check_version(meta, path)
    _check_features(meta, path)
    bad = _refusal(path)
    _check_arch(meta["arch"], bad)
    _check_int("seq_len", meta["seq_len"], 1, MAX_SEQ_LEN, bad)
    _check_hparams(meta["hparams"], bad)
    _check_norm(meta["norm"], list(meta["features"]), bad)
    _check_calibrator(meta, bad)
    if not _is_real(meta["logit_offset"]):
        raise bad(f"logit_offset must be a finite number, got {str(meta['logit_offset'])[:50]}")
    if not (_is_real(meta["threshold"]) and 0.0 <= meta["threshold"] <= 1.0):
        raise bad(f"threshold must be a probability in [0, 1], got {str(meta['threshold'])[:50]}")
    try:
        return ModelMeta.from_dict(meta)
    except MetaError as e:
        raise bad(str(e)) from e


def _refusal(path: str | os.PathLike[str]) -> Callable[[str], CheckpointError]:
    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: metadata does not describe a usable model: {why}")

    return bad


def _check_version(meta: dict[str, Any], path: str | os.PathLike[str]) -> None:
    version = meta.get("meta_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= META_VERSION:
        raise CheckpointError(
            f"{path} has metadata version {str(version)[:20]}; this tickcast reads versions 1 to "
            f"{META_VERSION}: upgrade tickcast or retrain the model"
        )


def _check_features(meta: dict[str, Any], path: str | os.PathLike[str]) -> None:
    names = meta["features"]
    target = meta.get("target", "tick")
    try:
        if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
            raise ValueError("features must be a list of column names")
        rows.check_names(names)
        if target not in features.TARGETS:
            raise ValueError(f"unknown target {str(target)[:50]!r}")
        if target != "event" and rows.EVENT_ONLY & set(names):
            raise ValueError("event columns on a tick-target model")
    except ValueError as e:
        raise CheckpointError(
            f"{path} was trained on features {str(names)[:200]} with target {str(target)[:20]}, which "
            f"this tickcast does not compute ({e}; it knows {list(rows.NAMES)}): upgrade tickcast or "
            "retrain the model"
        ) from e


def _check_calibrator(meta: dict[str, Any], bad: Callable[[str], CheckpointError]) -> None:
    raw = meta.get("calibrator")
    if raw is None:
        return
    try:
        calibration.Calibrator.from_dict(raw)
    except (ValueError, TypeError, AttributeError) as e:
        raise bad(f"calibrator: {first_line(e)[:200]}") from e


def _check_arch(arch: object, bad: Callable[[str], CheckpointError]) -> None:
    if not isinstance(arch, str):
        raise bad(f"arch must be a name, got {type(arch).__name__}")
    try:
        nets.canonical_arch(arch)
    except ValueError as e:
        raise bad(str(e)) from e


def _check_hparams(hparams: object, bad: Callable[[str], CheckpointError]) -> None:
    if not isinstance(hparams, dict):
        raise bad(f"hparams must be a mapping, got {type(hparams).__name__}")
    unknown = sorted(str(k) for k in hparams if k not in INT_HPARAMS and k not in FLOAT_HPARAMS)
    if unknown:
        raise bad(
            f"unknown hyper-parameter(s) {', '.join(unknown)[:200]}; this tickcast knows "
            f"{', '.join([*INT_HPARAMS, *FLOAT_HPARAMS])}"
        )
    for name, (low, high) in INT_HPARAMS.items():
        if name in hparams:
            _check_int(f"hparams.{name}", hparams[name], low, high, bad)
    for name, (flow, fhigh) in FLOAT_HPARAMS.items():
        v = hparams.get(name, flow)
        if not (_is_real(v) and flow <= v < fhigh):
            raise bad(f"hparams.{name} must be a number in [{flow}, {fhigh}), got {str(v)[:50]}")


def _check_norm(norm: object, features_: list[str], bad: Callable[[str], CheckpointError]) -> None:
    if not isinstance(norm, dict):
        raise bad(f"norm must be a mapping of mean and std, got {type(norm).__name__}")
    n = len(features_)
    for key in ("mean", "std"):
        v = norm.get(key)
        if not isinstance(v, list | tuple) or len(v) != n or not all(_is_real(x) for x in v):
            raise bad(f"norm.{key} must be {n} finite numbers, one per feature")
    if not all(x > 0 for x in norm["std"]):
        raise bad("norm.std must be positive")


def _is_real(v: object) -> TypeGuard[int | float]:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _check_int(name: str, v: object, low: int, high: int, bad: Callable[[str], CheckpointError]) -> None:
    if isinstance(v, bool) or not isinstance(v, int):
        raise bad(f"{name} must be an integer, got {str(v)[:50]}")
    if not low <= v <= high:
        raise bad(
            f"{name} {v} is outside {low}..{high}, the range this tickcast loads: "
            "it is corrupt, or retrain with a value in range"
        )
