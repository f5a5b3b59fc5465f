"""One model, one file: weights plus the plain metadata needed to rebuild and trust it.

Files are loaded with `weights_only=True`, so the metadata is restricted to
plain types (str, int, float, bool, None, lists, dicts, tensors): a checkpoint
can never run code on load. Writes go to a temporary name in the same folder
and are renamed over the target, so a crash leaves the old file or the new
one, never half of either.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from app.atomic import atomic_write
from app.market.ticks import TickArrays
from app.ml import features, nets

FORMAT = "tickcast.checkpoint"
FORMAT_VERSION = 1
MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class CheckpointError(ValueError):
    """A file that cannot be used as a model; the message says why and what to do."""


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


def save(path: str | os.PathLike[str], state_dict: dict[str, torch.Tensor], meta: dict[str, Any],
         train_state: dict[str, Any] | None = None) -> Path:
    """Atomically write a checkpoint; `train_state` (optimizer etc.) only for resumable files."""
    path = Path(path)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "meta": meta,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
    }
    if train_state is not None:
        payload["train_state"] = train_state
    with atomic_write(path) as f:
        torch.save(payload, f)
    return path


def read(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw payload, checked for shape and version; weights are not put into a module."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises a zoo of types on corrupt files (OSError, IndexError, ...)
        first = (str(e).splitlines() or [type(e).__name__])[0]
        first = re.sub(r"\x1b\[[0-9;]*m", "", first)[:200]
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated, corrupt, or holding more than "
            f"plain data): {first}"
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a torch file but not a tickcast checkpoint")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}; this tickcast reads version "
            f"{FORMAT_VERSION}: upgrade tickcast or retrain the model"
        )
    if not isinstance(payload.get("meta"), dict) or not isinstance(payload.get("state_dict"), dict):
        raise CheckpointError(f"{path} lacks its metadata or weights")
    return payload


REQUIRED_META = ("arch", "hparams", "seq_len", "features", "norm", "logit_offset", "threshold")


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


def build_net(meta: dict[str, Any]) -> nn.Module:
    return nets.build(meta["arch"], n_features=len(meta["features"]), seq_len=meta["seq_len"],
                      **meta["hparams"])


@dataclass
class Model:
    """A loaded model ready to score windows: net in eval mode on its device, plus its metadata."""

    id: str
    net: nn.Module
    meta: dict[str, Any]
    norm: features.Normalizer
    device: torch.device

    @property
    def seq_len(self) -> int:
        return int(self.meta["seq_len"])

    @property
    def threshold(self) -> float:
        return float(self.meta["threshold"])

    @torch.inference_mode()
    def proba(self, windows: np.ndarray | torch.Tensor) -> np.ndarray:
        """Calibrated rise probabilities for standardised windows (B, L, F)."""
        x = torch.as_tensor(windows, dtype=torch.float32).to(self.device)
        logits = self.net(x) + float(self.meta["logit_offset"])
        return torch.sigmoid(logits).float().cpu().numpy()

    def predict(self, ticks: TickArrays) -> float:
        """Rise probability for the tick after the last one given."""
        return float(self.proba(features.last_window(ticks, self.seq_len, self.norm)[None])[0])


def load(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Model:
    """Rebuild the net from metadata and load its weights strictly onto `device`."""
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    payload = read(path, map_location=dev)
    meta = payload["meta"]
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise CheckpointError(f"{path} metadata lacks {', '.join(missing)}: retrain the model")
    if list(meta["features"]) != list(features.FEATURES):
        raise CheckpointError(
            f"{path} was trained on features {meta.get('features')}, this tickcast computes "
            f"{list(features.FEATURES)}: retrain the model"
        )
    try:
        net = build_net(meta)
        norm = features.Normalizer.from_dict(meta["norm"])
        float(meta["logit_offset"]), float(meta["threshold"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: metadata does not describe a usable model: {e}") from e
    try:
        net.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the described model: {e}") from e
    net.to(dev).eval()
    return Model(str(meta.get("id", Path(path).stem)), net, meta, norm, dev)
