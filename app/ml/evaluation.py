"""Score saved models on data, beside the references they have to beat.

Used by `scripts/evaluate.py` and by `train.py --num_epochs 0`; the service's
`if_better` promotion compares models the same way, and training scores its epochs
through `logits_at`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

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


@dataclass
class Evaluation:
    """What `compare` found: a row per baseline and model, each model's reliability bins, and
    notes a reader needs (a baseline that could not be fitted, and why)."""

    rows: list[Row]
    reliability: dict[str, list[metrics.Bin]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@torch.inference_mode()
def logits_at(
    net: nn.Module, data: features.WindowedData, idx: np.ndarray, batch_size: int = 4096
) -> np.ndarray:
    """float64 logits of the windows starting at `idx`, in eval mode, batched to bound memory."""
    was_training = net.training
    net.eval()
    w, at = data.windows, torch.from_numpy(idx).to(data.rows.device)
    out = [net(w[at[a : a + batch_size]]) for a in range(0, len(idx), batch_size)]
    net.train(was_training)
    return torch.cat(out).double().cpu().numpy() if out else np.empty(0)


def model_probs(
    model: checkpoint.Model, data: features.WindowedData, idx: np.ndarray, batch_size: int = 4096
) -> np.ndarray:
    """The model's calibrated probabilities: exactly what it serves for these windows."""
    return model.calibrator.apply(logits_at(model.net, data, idx, batch_size))


def dataset_for(
    model: checkpoint.Model,
    ticks: TickArrays | Sequence[TickArrays],
    train: float = DEFAULTS.train_split,
    val: float = DEFAULTS.val_split,
    *,
    whole: bool = False,
) -> features.WindowedData:
    """Windows of `ticks` as the model sees them: its columns and target, standardised with its
    own (training-time) statistics; `whole`: every window, no split."""
    spec = model.spec
    return features.build_dataset(
        ticks,
        spec.seq_len,
        horizon=model.meta.horizon,
        train=train,
        val=val,
        norm=spec.norm,
        names=spec.names,
        target=spec.target,
        whole=whole,
    )


def training_split(model: checkpoint.Model) -> tuple[float, float]:
    """The split fractions the model was trained with (the defaults for a file that never said)."""
    t = model.meta.train or {}
    return float(t.get("train_split", DEFAULTS.train_split)), float(t.get("val_split", DEFAULTS.val_split))


def compare(
    models: list[checkpoint.Model],
    ticks: TickArrays | Sequence[TickArrays],
    *,
    split: tuple[float, float] | None = None,
    part: str = "test",
    reference: TickArrays | None = None,
    with_baselines: bool = True,
) -> Evaluation:
    """The baselines, then each model, on the same windows of `ticks`.

    With no `split`, `ticks` are data the models never saw: every window is scored,
    and the baselines are fitted on `reference` (the first model's training data, or
    a file given for that) split as the model's training was, their thresholds chosen
    on its validation part. With a `split`, `ticks` are divided as in training and
    `part` is scored, the baselines fitted on its training part."""
    if not models:
        raise ValueError("no model to evaluate")
    first = models[0]
    if split is None:
        data = dataset_for(first, ticks, whole=True)
        idx = data.split.part("test")
        ref = None if reference is None else dataset_for(first, reference, *training_split(first))
    else:
        data = dataset_for(first, ticks, *split)
        idx, ref = data.split.part(part), data
    out = Evaluation([])
    if with_baselines:
        _baselines(out, first, data, idx, ref)
    for m in models:
        if m is first:
            d = data
        else:
            d = dataset_for(m, ticks, whole=True) if split is None else dataset_for(m, ticks, *split)
        i = d.split.part("test" if split is None else part)
        p, y = model_probs(m, d, i), d.y(i)
        out.rows.append(Row(m.id, metrics.report(y, p, m.threshold)))
        out.reliability[m.id] = metrics.reliability(y, p)
    return out


def _baselines(
    out: Evaluation,
    model: checkpoint.Model,
    data: features.WindowedData,
    idx: np.ndarray,
    ref: features.WindowedData | None,
) -> None:
    if ref is None:
        out.notes.append(
            "no baselines: they are fitted on the model's training data, which is not available "
            "here; give a file of it (--baselines-from) to compare"
        )
        return
    rule = model.meta.threshold_rule or "base_rate"
    fit, choose = baselines.Windows(ref, ref.split.train), baselines.Windows(ref, ref.split.val)
    scores, note = baselines.reports(fit, choose, {"scored": baselines.Windows(data, idx)}, rule)
    out.rows += [Row(name, s) for name, s in scores["scored"].items()]
    out.notes += [note] if note else []


COLUMNS = ("auc", "brier", "log_loss", "ece", "ppv", "npv", "coverage", "base_rate", "n")
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
