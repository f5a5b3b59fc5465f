"""Tiny real checkpoints, good and damaged in one way each, for the registries' tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from app.ml import checkpoint, features, nets

# what the reason of each damaged kind of file says
BAD = {
    "absurd": "hidden_size 100000000 is outside 1..4096",
    "shapes": "head.weight has shape (3, 3)",
    "not-a-tensor": "head.bias is a list, not a tensor",
    "truncated": "truncated",
}


def write_model(
    folder: Path, model_id: str, *, created_at: str, seq_len: int = 8, auc: float | None = 0.55, seed: int = 0
) -> Path:
    """A real (untrained, tiny) CNN checkpoint, built the way training builds one."""
    torch.manual_seed(seed)
    net = nets.build("CNN", n_features=len(features.FEATURES), seq_len=seq_len, hidden_size=8, num_layers=1)
    n = len(features.FEATURES)
    meta = {
        "id": model_id,
        "arch": "CNN",
        "hparams": {"hidden_size": 8, "num_layers": 1},
        "seq_len": seq_len,
        "horizon": 1,
        "features": list(features.FEATURES),
        "norm": features.Normalizer(np.zeros(n, np.float32), np.ones(n, np.float32)).to_dict(),
        "logit_offset": 0.0,
        "threshold": 0.4,
        "created_at": created_at,
        "metrics": {"val": {"auc": auc}},
    }
    return checkpoint.save(folder / f"{model_id}.pt", net.state_dict(), meta)


def write_bad(folder: Path, model_id: str, case: str) -> Path:
    """A model file damaged in one way (a key of BAD), built from a real checkpoint."""
    good = write_model(folder, model_id, created_at="2023-01-01T00:00:00+00:00")
    payload = torch.load(good, weights_only=True)
    meta, sd = payload["meta"], payload["state_dict"]
    if case == "absurd":
        meta["hparams"]["hidden_size"] = 10**8
    elif case == "shapes":
        sd["head.weight"] = torch.zeros(3, 3)
    elif case == "not-a-tensor":  # checkpoint.save wants tensors: write the same structure
        sd["head.bias"] = [0.0]
        torch.save({**payload, "state_dict": sd}, good)
        return good
    elif case == "truncated":
        good.write_bytes(good.read_bytes()[:300])
        return good
    return checkpoint.save(good, sd, meta)
