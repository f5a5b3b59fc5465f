"""One model, one file: weights plus the plain metadata needed to rebuild and trust it.

Files are loaded with `weights_only=True`, so the metadata is restricted to
plain types (str, int, float, bool, None, lists, dicts, tensors): a checkpoint
can never run code on load. Writes go to a temporary name in the same folder
and are renamed over the target, so a crash leaves the old file or the new
one, never half of either.

A file is judged before it is trusted: `check` bounds every hyper-parameter
the metadata hands to `nets.build`, derives the expected weight shapes by
building the net on the `meta` device (which allocates nothing) and compares
them with the file's tensors, all before a single weight is allocated. Reading
memory-maps the archive, so even a file holding a huge tensor costs no memory
until it has passed. `load` raises nothing but CheckpointError.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from app.atomic import atomic_write
from app.market.ticks import TickArrays
from app.ml import calibration, features, nets
from app.ml.meta import ModelMeta
from app.ml.meta_checks import FLOAT_HPARAMS as FLOAT_HPARAMS
from app.ml.meta_checks import INT_HPARAMS as INT_HPARAMS
from app.ml.meta_checks import MAX_PARAMETERS, first_line
from app.ml.meta_checks import CheckpointError as CheckpointError
from app.ml.meta_checks import check_meta as check_meta

FORMAT = "tickcast.checkpoint"
FORMAT_VERSION = 1
MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


ZIP_MAGIC = b"PK\x03\x04"  # every torch.save archive starts with a zip local header


class NotACheckpoint(CheckpointError):
    """The file is no tickcast checkpoint at all (another torch file, or not a torch archive):
    a stray file in the models folder rather than a damaged model."""


def new_model_id(arch: str, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"{arch.lower()}-{now:%Y%m%d-%H%M%S}-{os.urandom(3).hex()}"


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        tickcast = version("tickcast")
    except PackageNotFoundError:
        tickcast = "unknown"
    return {"tickcast": tickcast, "torch": str(torch.__version__), "python": platform.python_version()}


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def save(
    path: str | os.PathLike[str],
    state_dict: Mapping[str, torch.Tensor],
    meta: ModelMeta | Mapping[str, Any],
    train_state: dict[str, Any] | None = None,
) -> Path:
    """Atomically write a checkpoint; `train_state` (optimizer etc.) only for resumable files.

    `meta` is a ModelMeta; plain metadata is written as given (a test or a tool that crafts a
    file by hand)."""
    path = Path(path)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "meta": meta.to_dict() if isinstance(meta, ModelMeta) else dict(meta),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
    }
    if train_state is not None:
        payload["train_state"] = train_state
    with atomic_write(path) as f:
        torch.save(payload, f)
    return path


def read(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu", *, mmap: bool = False
) -> dict[str, Any]:
    """The raw payload, checked for shape and version; weights are not put into a module.

    With `mmap` the tensors stay in the file's pages until touched: judging a file costs no
    memory for its weights, however large they claim to be."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with path.open("rb") as f:
            is_zip = f.read(len(ZIP_MAGIC)) == ZIP_MAGIC
    except OSError as e:
        raise CheckpointError(f"{path} cannot be read: {first_line(e)}") from e
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap and is_zip)
    except Exception as e:  # torch raises a zoo of types on corrupt files (OSError, IndexError, ...)
        error = CheckpointError if is_zip else NotACheckpoint  # a cut-short archive is still a model
        raise error(
            f"{path} is not a readable checkpoint (truncated, corrupt, or holding more than "
            f"plain data): {first_line(e)}"
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise NotACheckpoint(f"{path} is a torch file but not a tickcast checkpoint")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}; this tickcast reads version "
            f"{FORMAT_VERSION}: upgrade tickcast or retrain the model"
        )
    if not isinstance(payload.get("meta"), dict) or not isinstance(payload.get("state_dict"), dict):
        raise CheckpointError(f"{path} lacks its metadata or weights")
    return payload


def best_device(requested: str = "auto") -> torch.device:
    """CUDA, then MPS, then CPU; a forced device that is absent is an error, not a silent CPU."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(requested)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {requested!r} requested but MPS is not available; use 'auto' or 'cpu'")
    return dev


def build_net(meta: ModelMeta) -> nn.Module:
    return nets.build(meta.arch, n_features=len(meta.features), seq_len=meta.seq_len, **meta.hparams)


@dataclass
class Model:
    """A loaded model ready to score windows: net in eval mode on its device, plus its metadata,
    how it turns ticks into windows (`spec`) and how it turns logits into probabilities."""

    id: str
    net: nn.Module
    meta: ModelMeta
    device: torch.device
    spec: features.WindowSpec
    calibrator: calibration.Calibrator
    calibrator_version: int = 0  # 0: the checkpoint's own; later ones were refitted on live outcomes

    @property
    def norm(self) -> features.Normalizer:
        """The training split's standardisation (the spec's)."""
        return self.spec.norm

    @property
    def seq_len(self) -> int:
        return self.meta.seq_len

    @property
    def threshold(self) -> float:
        return self.meta.threshold

    @torch.inference_mode()
    def logits(self, windows: np.ndarray | torch.Tensor) -> np.ndarray:
        """The net's raw logits for standardised windows (B, L, F), before calibration."""
        x = torch.as_tensor(windows, dtype=torch.float32).to(self.device)
        out: np.ndarray = self.net(x).double().cpu().numpy()
        return out

    @torch.inference_mode()
    def logits_ending_at(self, ticks: TickArrays, first: int) -> np.ndarray:
        """`logits(spec.windows_ending_at(ticks, first))` (tick target): for a net that can share
        the per-row work between overlapping windows (TickNet), at a fraction of the cost."""
        series = getattr(self.net, "forward_series", None)
        if series is None or self.spec.target != "tick":
            return self.logits(self.spec.windows_ending_at(ticks, first))
        rows = torch.as_tensor(self.spec.rows_ending_at(ticks, first), dtype=torch.float32).to(self.device)
        out: np.ndarray = series(rows, self.seq_len).double().cpu().numpy()
        return out

    def proba(self, windows: np.ndarray | torch.Tensor) -> np.ndarray:
        """Calibrated rise probabilities for standardised windows (B, L, F): what is served."""
        return self.calibrator.apply(self.logits(windows))

    def predict(self, ticks: TickArrays) -> float:
        """Rise probability for the tick (or event) after the last one given."""
        return float(self.proba(self.spec.last_window(ticks)[None])[0])


def calibrator_of(meta: ModelMeta) -> calibration.Calibrator:
    """The file's calibrator; a file from before calibrators is calibrated by its logit offset."""
    if meta.calibrator is None:
        return calibration.Calibrator.offset(meta.logit_offset)
    return calibration.Calibrator.from_dict(meta.calibrator)


def spec_of(meta: ModelMeta) -> features.WindowSpec:
    norm = features.Normalizer.from_dict(meta.norm)
    return features.WindowSpec(meta.seq_len, norm, tuple(meta.features), meta.target)


def load(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Model:
    """Judge the file (`check`), then put its weights into a net on `device`.

    The net is built on the `meta` device and given the file's tensors (copied out of the
    mapped file), so no random initialisation is spent on weights that are replaced anyway."""
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    payload = read(path, map_location="cpu", mmap=True)
    meta, expected = check(payload, path)
    state = payload["state_dict"]
    try:
        spec = spec_of(meta)
        with torch.device("meta"):
            net = build_net(meta)
        net.load_state_dict(
            {k: v.to(dtype=expected[k].dtype, copy=True) for k, v in state.items()}, strict=True, assign=True
        )
        net.to(dev).eval()
    except Exception as e:  # anything left (out of memory on the device...) is still a refusal
        raise CheckpointError(f"{path} could not be loaded onto {dev}: {first_line(e)}") from e
    return Model(meta.id or Path(path).stem, net, meta, dev, spec, calibrator_of(meta))


def check(payload: dict[str, Any], path: str | os.PathLike[str]) -> tuple[ModelMeta, dict[str, torch.Tensor]]:
    """Refuse (CheckpointError) a payload from `read` that would not make a usable model: its
    metadata out of bounds, or its weights not those of the net the metadata describes.

    Nothing is allocated: the expected tensors, returned with the typed metadata, live on the
    `meta` device."""
    try:
        meta = check_meta(payload["meta"], path)
        expected = expected_state(meta, path)
        check_weights(payload["state_dict"], expected, path)
    except CheckpointError:
        raise
    except Exception as e:  # a check that trips over some odd value is a refusal too
        raise CheckpointError(f"{path}: metadata does not describe a usable model: {first_line(e)}") from e
    return meta, expected


def expected_state(meta: ModelMeta, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state_dict the metadata's net has, as `meta`-device tensors (shapes and dtypes, no
    data), with its parameter count bounded. Call after `check_meta`."""
    try:
        with torch.device("meta"):
            net = build_net(meta)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: metadata does not describe a usable model: {e}") from e
    expected = net.state_dict()
    n = sum(t.numel() for t in expected.values())
    if n > MAX_PARAMETERS:
        raise CheckpointError(
            f"{path}: metadata does not describe a usable model: the net it describes has {n:,} "
            f"weights, more than the {MAX_PARAMETERS:,} this tickcast loads; retrain a smaller one"
        )
    return expected


def check_weights(
    state: dict[str, Any], expected: dict[str, torch.Tensor], path: str | os.PathLike[str]
) -> None:
    """The file's tensors are exactly the expected ones: same names, shapes, kinds of number,
    plain dense tensors with finite values (a NaN weight would answer NaN for every request)."""

    def bad(why: str) -> CheckpointError:
        return CheckpointError(
            f"{path}: weights do not fit the described model ({why}): the file "
            "is damaged or its metadata is wrong; retrain the model"
        )

    missing = [k for k in expected if k not in state]
    extra = [str(k) for k in state if k not in expected]
    if missing or extra:
        parts = (
            [f"missing {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else "")] if missing else []
        )
        parts += [f"unexpected {', '.join(extra[:5])}" + (" ..." if len(extra) > 5 else "")] if extra else []
        raise bad("; ".join(parts)[:400])
    for k, want in expected.items():
        got = state[k]
        if not isinstance(got, torch.Tensor):
            raise bad(f"{k} is a {type(got).__name__}, not a tensor")
        if got.layout != torch.strided or got.is_quantized or got.device.type == "meta":
            raise bad(f"{k} is not a plain tensor holding data")
        if tuple(got.shape) != tuple(want.shape):
            raise bad(f"{k} has shape {tuple(got.shape)}, the model needs {tuple(want.shape)}")
        if want.is_floating_point() != got.is_floating_point() or got.is_complex() or got.dtype == torch.bool:
            raise bad(f"{k} holds {got.dtype}, the model needs {want.dtype}")
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise bad(f"{k} holds NaN or infinite values")
