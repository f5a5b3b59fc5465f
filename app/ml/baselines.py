"""Reference forecasts that any tickcast model must beat, on the very same windows.

All are fitted on the training split only. The last-move heuristic is the
tick-level fact every real market shows (bid-ask bounce: after an up-tick a
rise is likelier than after an unchanged price); the logistic regression on
the flattened window is the linear ceiling of the same features.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from app.ml import features


def probs(data: features.WindowedData, rng: tuple[int, int]) -> dict[str, np.ndarray]:
    """Reference forecasts on the same windows, fitted on the training split only: the
    ancestor-free sanity floor every model must beat."""
    w = data.windows
    y_tr = data.targets[data.split.train[0] : data.split.train[1]].cpu().numpy()
    # last-move heuristic: the training split's rise rate after an up, down or flat move
    flags = features.FEATURES.index("up"), features.FEATURES.index("down")

    def last_move(a: int, b: int) -> np.ndarray:
        last = w[a:b, -1].cpu().numpy()
        return np.where(
            last[:, flags[0]] > last[:, flags[0]].mean(),
            0,
            np.where(last[:, flags[1]] > last[:, flags[1]].mean(), 1, 2),
        )

    tr_mv = last_move(*data.split.train)
    rates = np.array([y_tr[tr_mv == k].mean() if (tr_mv == k).any() else y_tr.mean() for k in range(3)])
    out = {"base_rate": np.full(rng[1] - rng[0], y_tr.mean()), "last_move": rates[last_move(*rng)]}
    out["logistic"] = _logistic(w, data.targets, data.split.train, rng)
    return out


def _logistic(w: torch.Tensor, y: torch.Tensor, train: tuple[int, int], rng: tuple[int, int]) -> np.ndarray:
    """Logistic regression on the flattened standardised windows (L-BFGS, light L2)."""
    x_tr = w[train[0] : train[1]].flatten(1).float().cpu()
    y_tr = y[train[0] : train[1]].float().cpu()
    lin = nn.Linear(x_tr.shape[1], 1).double()
    xd, yd = x_tr.double(), y_tr.double()
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(lin(xd).squeeze(-1), yd)
        loss = loss + 1e-4 * lin.weight.pow(2).sum()
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]  # and LBFGS.step too
    with torch.no_grad():
        x = w[rng[0] : rng[1]].flatten(1).double().cpu()
        return torch.sigmoid(lin(x).squeeze(-1)).numpy()
