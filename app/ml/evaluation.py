"""Score a saved model on fresh data, beside the references it has to beat.

Used by `scripts/evaluate.py` and by `train.py --num_epochs 0`; the service's
`if_better` promotion compares models the same way, and training scores its epochs
with `score`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from app.market.ticks import TickArrays
from app.ml import baselines, checkpoint, features, metrics
from app.ml.config import DEFAULTS


@dataclass(frozen=True)
class Row:
    name: str
    scores: dict[str, float]


def model_probs(
    model: checkpoint.Model, data: features.WindowedData, rng: tuple[int, int], batch_size: int = 4096
) -> np.ndarray:
    w = data.windows
    parts = [model.proba(w[a : min(a + batch_size, rng[1])]) for a in range(rng[0], rng[1], batch_size)]
    return np.concatenate(parts) if parts else np.empty(0)


@torch.inference_mode()
def predict_logits(
    net: nn.Module, windows: torch.Tensor, lo: int, hi: int, batch_size: int = 4096
) -> torch.Tensor:
    """Logits of windows [lo, hi) in eval mode, batched to bound memory."""
    was_training = net.training
    net.eval()
    out = [net(windows[a : min(a + batch_size, hi)]) for a in range(lo, hi, batch_size)]
    net.train(was_training)
    return torch.cat(out) if out else torch.empty(0, device=windows.device)


def score(
    net: nn.Module,
    data: features.WindowedData,
    rng: tuple[int, int],
    logit_offset: float,
    threshold: float,
    batch_size: int = 4096,
) -> dict[str, float]:
    """Metrics of calibrated probabilities on one split."""
    logits = predict_logits(net, data.windows, rng[0], rng[1], batch_size)
    p = torch.sigmoid(logits + logit_offset).float().cpu().numpy()
    y = data.targets[rng[0] : rng[1]].float().cpu().numpy()
    return metrics.report(y, p, threshold)


def dataset_for(
    model: checkpoint.Model, ticks: TickArrays, train: float, val: float
) -> features.WindowedData:
    """Windows of `ticks` standardised with the model's own (training-time) statistics."""
    return features.build_dataset(
        ticks, model.seq_len, horizon=model.meta.horizon, train=train, val=val, norm=model.norm
    )


def eval_range(data: features.WindowedData, part: str) -> tuple[int, int]:
    rng: tuple[int, int] | None = getattr(data.split, part)
    if rng is None:
        raise ValueError(f"the data has no {part} split; lower --split so that train + val < 1")
    return rng


def compare(
    models: list[checkpoint.Model],
    ticks: TickArrays,
    *,
    train: float = DEFAULTS.train_split,
    val: float = DEFAULTS.val_split,
    part: str = "test",
) -> list[Row]:
    """Base rate, last-move heuristic, logistic regression, then each model, on one split.

    The references are fitted on the split's training part with the first
    model's normalisation, so every row sees the very same windows.
    """
    if not models:
        raise ValueError("no model to evaluate")
    data = dataset_for(models[0], ticks, train, val)
    rng = eval_range(data, part)
    y = data.targets[rng[0] : rng[1]].cpu().numpy()
    y_tr = data.targets[data.split.train[0] : data.split.train[1]].cpu().numpy()
    thr = float(y_tr.mean())
    rows = [Row(name, metrics.report(y, p, thr)) for name, p in baselines.probs(data, rng).items()]
    for i, m in enumerate(models):
        d = data if i == 0 else dataset_for(m, ticks, train, val)
        r = eval_range(d, part)
        p = model_probs(m, d, r)
        rows.append(Row(m.id, metrics.report(d.targets[r[0] : r[1]].cpu().numpy(), p, m.threshold)))
    return rows


COLUMNS = ("auc", "brier", "log_loss", "accuracy", "ppv", "npv", "base_rate", "n")
UNDEFINED = "n/a"
FOOTNOTE = (
    f"{UNDEFINED}: undefined. PPV scores a row's rise calls and NPV its no-rise calls; a row "
    "that never makes one of them (the base rate calls every window a rise) has none to score."
)


def format_table(rows: list[Row], columns: tuple[str, ...] = COLUMNS) -> str:
    """A plain-text table; also valid Markdown, so it pastes into the README as is.

    A score that is undefined (NaN: the NPV of a row that never calls "no rise") reads
    n/a, explained by a footnote under the table, not a bare "nan" a reader must decode.
    """
    name_w = max(len("model"), *(len(r.name) for r in rows))
    head = "| " + "model".ljust(name_w) + " | " + " | ".join(c.rjust(9) for c in columns) + " |"
    sep = "|" + "-" * (name_w + 2) + "|" + "|".join("-" * 10 + ":" for _ in columns) + "|"
    lines = [head, sep]
    undefined = False
    for r in rows:
        cells = []
        for c in columns:
            v = r.scores.get(c, float("nan"))
            if not math.isfinite(v):
                undefined = True
                cells.append(UNDEFINED.rjust(9))
            else:
                cells.append(f"{int(v):9d}" if c == "n" else f"{v:9.4f}")
        lines.append("| " + r.name.ljust(name_w) + " | " + " | ".join(cells) + " |")
    if undefined:
        lines += ["", FOOTNOTE]
    return "\n".join(lines)
