"""What a model file says about itself, typed: read and written here and nowhere else.

`ModelMeta` is the metadata of a checkpoint: what rebuilds the net and calibrates its output
(arch, hparams, seq_len, features, norm, logit_offset, threshold), and what tells a person
where it came from (the run's settings, its data, its scores, the job that trained it). Files
stay plain data (`to_dict`), loadable with `torch.load(weights_only=True)`.

Versions (`meta_version` in the file):

- 1: every file written before the version was recorded (it has no `meta_version`). Only the
  keys that rebuild the net are certain; `horizon` (then 1), `train`, `data`, `metrics`,
  `versions`, `job_id`, ... may be missing, and a size left out of `hparams` meant what
  `nets.build` assumed then (`V1_SIZES`).
- 2: `meta_version` recorded; `hparams` always holds both sizes.
- 3: named feature columns (any of `app.ml.rows`, not only the ancestor's six), a `target`
  (tick or event), a `calibrator` fitted on the validation split (`logit_offset` is then 0),
  and the `threshold_rule` that chose `threshold`. A version 1 or 2 file is calibrated by its
  `logit_offset` and has the tick target.

`checkpoint.check_meta` judges a file's metadata, with the reasons a person reads, before
`from_dict` types it; `MetaSummary` is the forgiving view a models listing takes of any file,
damaged or not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeGuard

from app.ml.config import Hparams

META_VERSION = 3
V1_SIZES = {"hidden_size": 64, "num_layers": 4}  # nets.build's defaults while files had no version


class MetaError(ValueError):
    """Metadata that cannot be typed: a key that rebuilds the net is missing or of the wrong type."""


@dataclass(kw_only=True)
class ModelMeta:
    """A checkpoint's metadata. The fields are in the order a file lists them."""

    id: str | None = None  # None in a file that never said (the file name is its id)
    arch: str
    hparams: Hparams
    seq_len: int
    horizon: int = 1
    features: list[str]
    norm: dict[str, list[float]]  # the training split's per-feature mean and std
    logit_offset: float  # versions 1-2: added to the net's logit to undo the class weighting
    threshold: float  # decide "rise" at p >= threshold
    target: str = "tick"  # tick, or event (trades sharing a timestamp merged)
    calibrator: dict[str, Any] | None = None  # Calibrator.to_dict(); None: logit_offset calibrates
    threshold_rule: str | None = None  # how `threshold` was chosen on validation (None: base rate)
    train: dict[str, Any] | None = None  # the TrainConfig, as TrainConfig.to_dict() wrote it
    data: dict[str, Any] = field(default_factory=dict)  # where the ticks came from, the split
    created_at: str | None = None  # ISO 8601, UTC
    versions: dict[str, str] | None = None  # tickcast, torch, python
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # per split: the scores
    # per split, per reference baseline (tree, logistic, last move, base rate): its scores there
    baselines: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    best_epoch: int | None = None
    epochs: int | None = None
    train_seconds: float | None = None
    job_id: str | None = None  # the training job that saved it (so a restart can claim it)
    meta_version: int = META_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # keys this tickcast does not know, kept

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the file: every field but an unset optional one, then the unknown keys."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name not in ("extra", "meta_version") and v is not None:
                out[f.name] = dict(v) if f.name == "hparams" else v
        return {**out, **self.extra, "meta_version": self.meta_version}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelMeta:
        """Any version's metadata, typed; MetaError when a key that rebuilds the net is missing or
        of the wrong type. A descriptive key of the wrong type is read as absent."""
        version = d.get("meta_version", 1)
        if not _is_int(version) or not 1 <= version <= META_VERSION:
            raise MetaError(
                f"metadata version {str(version)[:20]}; this tickcast reads versions 1 to "
                f"{META_VERSION}: upgrade tickcast or retrain the model"
            )
        return cls(
            id=_opt(d, "id", str),
            arch=_req(d, "arch", str),
            hparams=_hparams(_req(d, "hparams", dict), version),
            seq_len=_req_int(d, "seq_len"),
            horizon=_opt_int(d, "horizon") or 1,
            features=[str(x) for x in _req(d, "features", list | tuple)],
            norm=_norm(_req(d, "norm", dict)),
            logit_offset=_req_real(d, "logit_offset"),
            threshold=_req_real(d, "threshold"),
            target=_opt(d, "target", str) or "tick",
            calibrator=_opt(d, "calibrator", dict),
            threshold_rule=_opt(d, "threshold_rule", str),
            train=_opt(d, "train", dict),
            data=_opt(d, "data", dict) or {},
            created_at=_opt(d, "created_at", str),
            versions=_opt(d, "versions", dict),
            metrics=_opt(d, "metrics", dict) or {},
            baselines=_opt(d, "baselines", dict) or {},
            best_epoch=_opt_int(d, "best_epoch"),
            epochs=_opt_int(d, "epochs"),
            train_seconds=_opt_real(d, "train_seconds"),
            job_id=_opt(d, "job_id", str),
            meta_version=version,
            extra={k: v for k, v in d.items() if k not in KNOWN},
        )


KNOWN = frozenset(f.name for f in fields(ModelMeta)) - {"extra"}


@dataclass(frozen=True)
class MetaSummary:
    """What a listing shows of a file's metadata, whatever state the file is in: each value only
    when it has its declared type, so a mis-described file is listed (unloadable, with its
    reason) rather than failing the page; `raw` is the metadata as the file has it."""

    raw: dict[str, Any] = field(default_factory=dict)
    arch: str | None = None
    seq_len: int | None = None
    created_at: str | None = None
    metrics: dict[str, Any] | None = None
    best_epoch: int | None = None
    epochs: int | None = None
    job_id: str | None = None

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> MetaSummary:
        return cls(
            raw=dict(raw),
            arch=_opt(raw, "arch", str),
            seq_len=_opt_int(raw, "seq_len"),
            created_at=_opt(raw, "created_at", str),
            metrics=_opt(raw, "metrics", dict),
            best_epoch=_opt_int(raw, "best_epoch"),
            epochs=_opt_int(raw, "epochs"),
            job_id=_opt(raw, "job_id", str) or None,
        )

    @property
    def val_auc(self) -> float | None:
        """The validation AUC recorded by training, if any."""
        try:
            v = (self.metrics or {})["val"]["auc"]
            return None if v is None else float(v)
        except (KeyError, TypeError, ValueError):
            return None


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: object) -> TypeGuard[int | float]:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _opt(d: Mapping[str, Any], key: str, kind: Any) -> Any:
    v = d.get(key)
    return v if isinstance(v, kind) else None


def _opt_int(d: Mapping[str, Any], key: str) -> int | None:
    v = d.get(key)
    return v if _is_int(v) else None


def _opt_real(d: Mapping[str, Any], key: str) -> float | None:
    v = d.get(key)
    return float(v) if _is_real(v) else None


def _req(d: Mapping[str, Any], key: str, kind: Any) -> Any:
    if key not in d:
        raise MetaError(f"metadata lacks {key}")
    v = d[key]
    if not isinstance(v, kind) or isinstance(v, bool):
        raise MetaError(f"{key} has the wrong type ({type(v).__name__})")
    return v


def _req_int(d: Mapping[str, Any], key: str) -> int:
    return int(_req(d, key, int))


def _req_real(d: Mapping[str, Any], key: str) -> float:
    v = _req(d, key, int | float)
    if not _is_real(v):
        raise MetaError(f"{key} must be a finite number")
    return float(v)


def _norm(raw: Mapping[str, Any]) -> dict[str, list[float]]:
    return {k: [float(x) for x in _req(raw, k, list | tuple)] for k in ("mean", "std")}


def _hparams(raw: Mapping[str, Any], version: int) -> Hparams:
    """The net's sizes; a version 1 file that left one out meant `nets.build`'s default then."""
    sizes = {**V1_SIZES, **raw} if version == 1 else dict(raw)
    hp: Hparams = {"hidden_size": _req_int(sizes, "hidden_size"), "num_layers": _req_int(sizes, "num_layers")}
    if "dropout" in sizes:
        hp["dropout"] = _req_real(sizes, "dropout")
    for key in ("bins", "recent", "ramped", "members"):
        if key in sizes:
            hp[key] = _req_int(sizes, key)  # TickNet's sizes
    return hp
