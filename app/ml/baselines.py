"""Reference forecasts that any tickcast model must beat, on the very same windows.

All are fitted on training windows only. The last-move rule is the tick-level
fact every real market shows (bid-ask bounce: after an up-tick a rise is likelier
than after an unchanged price); the logistic regression on the flattened window is
the linear ceiling of the same features; the gradient-boosted tree (`app.ml.tree`,
when scikit-learn is installed) is what a few lines of scikit-learn get from the
ticks, and so the bar a net has to clear to be worth serving.

Each baseline's decision threshold is chosen by the model's own rule on the
validation windows, so PPV and NPV compare like with like.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from app.ml import features, metrics, tree

TREE_MISSING = "the tree baseline was skipped: " + str(tree.TreeUnavailable())


@dataclass(frozen=True)
class Windows:
    """Some windows of a dataset: the dataset and the window starts."""

    data: features.WindowedData
    idx: np.ndarray

    def y(self) -> np.ndarray:
        return self.data.y(self.idx)

    def raw(self, columns: tuple[str, ...]) -> np.ndarray:
        """(N, L, C) windows of unstandardised columns, C in the order given."""
        cols = [self.data.names.index(c) for c in columns]
        view = np.lib.stride_tricks.sliding_window_view(self.data.raw[:, cols], self.data.seq_len, axis=0)
        return np.ascontiguousarray(view[self.idx].transpose(0, 2, 1))

    def flat(self) -> torch.Tensor:
        """The standardised windows, flattened: the logistic regression's input."""
        w = self.data.windows[torch.from_numpy(self.idx).to(self.data.rows.device)]
        return w.flatten(1).double().cpu()


def _last_move(fit: Windows, evals: list[Windows]) -> list[np.ndarray] | None:
    """The training windows' rise rate after an up, down or unchanged last move."""
    if not {"up", "down"} <= set(fit.data.names):
        return None

    def move(w: Windows) -> np.ndarray:
        last = w.raw(("up", "down"))[:, -1]
        return np.where(last[:, 0] > 0.5, 0, np.where(last[:, 1] > 0.5, 1, 2))

    y, mv = fit.y(), move(fit)
    rates = np.array([y[mv == k].mean() if (mv == k).any() else y.mean() for k in range(3)])
    return [rates[move(w)] for w in evals]


def _logistic(fit: Windows, evals: list[Windows]) -> list[np.ndarray]:
    """Logistic regression on the flattened standardised windows (L-BFGS, light L2)."""
    x, y = fit.flat(), torch.from_numpy(fit.y()).double()
    lin = nn.Linear(x.shape[1], 1).double()
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(lin(x).squeeze(-1), y)
        loss = loss + 1e-4 * lin.weight.pow(2).sum()
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]  # and LBFGS.step too
    with torch.no_grad():
        return [torch.sigmoid(lin(w.flat()).squeeze(-1)).numpy() for w in evals]


def _tree(fit: Windows, evals: list[Windows]) -> list[np.ndarray] | None:
    if not tree.available() or not set(tree.TREE_COLUMNS) <= set(fit.data.names):
        return None
    cols = tree.TREE_COLUMNS
    return tree.fit_predict(fit.raw(cols), fit.y(), [w.raw(cols) for w in evals])


def predictions(fit: Windows, evals: list[Windows]) -> dict[str, list[np.ndarray]]:
    """Each baseline fitted once on `fit`, then its rise probabilities on each of `evals`.
    A baseline that cannot run here (no scikit-learn, a model without its columns) is absent."""
    out = {"base_rate": [np.full(len(w.idx), fit.y().mean()) for w in evals]}
    for name, fn in (("last_move", _last_move), ("logistic", _logistic), ("tree", _tree)):
        p = fn(fit, evals)
        if p is not None:
            out[name] = p
    return out


def reports(
    fit: Windows, choose: Windows, scored: Mapping[str, Windows], rule: str
) -> tuple[dict[str, dict[str, dict[str, float]]], str | None]:
    """{part: {baseline: metrics}} for each scored part, every baseline fitted on `fit` with its
    threshold chosen by `rule` on `choose` (the validation windows); and a note when the tree
    could not be fitted here, so a report says why its row is missing."""
    # each set of windows predicted once: `choose` is usually also scored (training's validation)
    evals = [choose, *(w for w in scored.values() if w is not choose)]
    preds = predictions(fit, evals)
    y_choose = choose.y()
    out: dict[str, dict[str, dict[str, float]]] = {part: {} for part in scored}
    for name, ps in preds.items():
        by_windows = {id(w): p for w, p in zip(evals, ps, strict=True)}
        thr = (
            metrics.choose_threshold(y_choose, ps[0], rule) if name != "base_rate" else float(y_choose.mean())
        )
        for part, w in scored.items():
            out[part][name] = metrics.report(w.y(), by_windows[id(w)], thr)
    note = None if "tree" in preds or not set(tree.TREE_COLUMNS) <= set(fit.data.names) else TREE_MISSING
    return out, note


def of_training(
    data: features.WindowedData, parts: Mapping[str, np.ndarray], rule: str
) -> tuple[dict[str, dict[str, dict[str, float]]], str | None]:
    """The baselines of a training run: fitted on its training windows, thresholds on validation."""
    scored = {k: Windows(data, idx) for k, idx in parts.items()}
    choose = scored["val"] if "val" in scored else Windows(data, data.split.val)
    return reports(Windows(data, data.split.train), choose, scored, rule)
