"""Classification metrics for rise/no-rise forecasts, in numpy.

PPV and NPV are the ancestor's headline numbers; they mean little without the
base rate beside them, and nothing about the probabilities themselves, so
ROC AUC (ranking), Brier and log loss (calibration) come with them, each with
the score a constant base-rate forecast would get. ECE, the reliability table and
the top decile say whether the probabilities can be read as probabilities, and the
threshold rules pick the decision threshold on the validation split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_EPS = 1e-7


def _arrays(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and probabilities differ in length: {y.size} vs {p.size}")
    return y, p


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Mann-Whitney AUC with tied scores counted half; NaN when only one class is present."""
    y, p = _arrays(y, p)
    pos = y > 0.5
    n_pos = int(pos.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    sp = p[order]
    # average ranks over runs of tied scores
    boundaries = np.flatnonzero(np.diff(sp)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [sp.size]))
    avg_rank = (starts + ends + 1) / 2.0  # 1-based average rank of each run
    ranks = np.empty(sp.size, dtype=np.float64)
    ranks[order] = np.repeat(avg_rank, ends - starts)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    y, p = _arrays(y, p)
    return float(np.mean((p - y) ** 2))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    y, p = _arrays(y, p)
    p = np.clip(p, _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def ppv_npv(y: np.ndarray, p: np.ndarray, threshold: float) -> tuple[float, float]:
    """Precision of the 'rise' calls and of the 'no rise' calls; NaN when a side is never called."""
    y, p = _arrays(y, p)
    call = p >= threshold
    pos = y > 0.5
    tp, fp = int((call & pos).sum()), int((call & ~pos).sum())
    tn, fn = int((~call & ~pos).sum()), int((~call & pos).sum())
    ppv = tp / (tp + fp) if tp + fp else float("nan")
    npv = tn / (tn + fn) if tn + fn else float("nan")
    return ppv, npv


def report(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """All metrics in one plain dict (it goes into checkpoints and JSON as is)."""
    y, p = _arrays(y, p)
    if y.size == 0:
        raise ValueError("no samples to score")
    base = float(y.mean())
    const = np.full_like(y, base)
    ppv, npv = ppv_npv(y, p, threshold)
    top_p, top_observed = top_decile(y, p)
    return {
        "n": float(y.size),
        "base_rate": base,
        "auc": roc_auc(y, p),
        "brier": brier(y, p),
        "log_loss": log_loss(y, p),
        "base_brier": brier(y, const),
        "base_log_loss": log_loss(y, const),
        "accuracy": float(np.mean((p >= threshold) == (y > 0.5))),
        "ppv": ppv,
        "npv": npv,
        "threshold": float(threshold),
        "ece": ece(y, p),
        "coverage": float(np.mean(p >= threshold)),
        "top_decile_p": top_p,
        "top_decile_observed": top_observed,
    }


# Which way is better for each metric that can drive early stopping.
HIGHER_IS_BETTER = {
    "auc": True,
    "accuracy": True,
    "ppv": True,
    "npv": True,
    "brier": False,
    "log_loss": False,
    "loss": False,
}


@dataclass(frozen=True)
class Bin:
    """One row of a reliability table: the forecasts in [lo, hi) and what happened."""

    lo: float
    hi: float
    mean_p: float  # NaN when the bin is empty
    observed: float  # share of rises; NaN when the bin is empty
    count: int


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[Bin]:
    """Equal-width bins on [0, 1]: bin k holds p in [k/bins, (k+1)/bins), p == 1 the last.

    Every bin is listed, empty ones too, so tables of two models line up row by row.
    """
    y, p = _arrays(y, p)
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    # k / bins, not linspace: the edges are then the nearest floats to 0.1, 0.2, ...
    edges = np.arange(bins + 1) / bins
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    counts = np.bincount(idx, minlength=bins)
    sum_p = np.bincount(idx, weights=p, minlength=bins)
    sum_y = np.bincount(idx, weights=y, minlength=bins)
    out = []
    for k in range(bins):
        c = int(counts[k])
        mean_p = float(sum_p[k] / c) if c else float("nan")
        observed = float(sum_y[k] / c) if c else float("nan")
        out.append(Bin(float(edges[k]), float(edges[k + 1]), mean_p, observed, c))
    return out


def ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: |mean forecast - share of rises| per bin, weighted by count."""
    y, p = _arrays(y, p)
    if y.size == 0:
        raise ValueError("no samples to score")
    total = sum(b.count * abs(b.mean_p - b.observed) for b in reliability(y, p, bins) if b.count)
    return float(total / y.size)


def format_reliability(bins: list[Bin]) -> str:
    """A plain-text table that is also Markdown, for a terminal and a report alike."""
    header = ("bin", "mean predicted", "observed", "count")
    rows = []
    for i, b in enumerate(bins):
        close = "]" if i == len(bins) - 1 else ")"
        means = (f"{b.mean_p:.3f}", f"{b.observed:.3f}") if b.count else ("n/a", "n/a")
        rows.append((f"[{b.lo:.2f}, {b.hi:.2f}{close}", *means, str(b.count)))
    widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "| " + " | ".join((first, *rest)) + " |"

    rule = "| " + " | ".join(["-" * widths[0], *("-" * (w - 1) + ":" for w in widths[1:])]) + " |"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def top_decile(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Mean forecast and share of rises over the tenth of windows the model is surest will rise.

    The windows a trader would act on: a calibrated model has the two close together, a useful
    one has both well above the base rate. Ties at the cut keep the earlier windows.
    """
    y, p = _arrays(y, p)
    if y.size == 0:
        raise ValueError("no samples to score")
    k = math.ceil(y.size / 10)
    top = np.argsort(-p, kind="stable")[:k]
    return float(p[top].mean()), float(y[top].mean())


THRESHOLD_RULES: dict[str, str] = {
    "f1": "the threshold that maximises F1 of the rise calls",
    "base_rate": "the share of rises: a calibrated model calls a rise where a rise is likelier than usual",
    "ppv:X": "the lowest threshold whose PPV reaches X (0 < X < 1) with at least 1% of windows "
    "called a rise; if none reaches X, the one with the best PPV at that coverage",
    "fixed:X": "X itself (0 < X < 1)",
}
MIN_COVERAGE = 0.01  # of the ppv rule: a PPV measured on a handful of calls is luck


def _open_unit(text: str) -> float | None:
    try:
        x = float(text)
    except ValueError:
        return None
    return x if 0.0 < x < 1.0 else None


def parse_threshold_rule(s: str) -> str:
    """The canonical spelling of a threshold rule (lower case, X as Python writes it), or ValueError."""
    text = s.strip().lower() if isinstance(s, str) else ""
    if text in ("f1", "base_rate"):
        return text
    name, sep, value = text.partition(":")
    x = _open_unit(value) if sep and name in ("ppv", "fixed") else None
    if x is None:
        raise ValueError(
            f"threshold rule {s!r} not understood: use f1, base_rate, ppv:X or fixed:X "
            "with 0 < X < 1 (e.g. ppv:0.6)"
        )
    return f"{name}:{x!r}"


def _cumulative(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct forecasts, highest first, with the calls and the true rises a threshold at each makes."""
    order = np.argsort(-p, kind="stable")
    sp = p[order]
    last = np.r_[np.flatnonzero(sp[1:] != sp[:-1]), sp.size - 1]  # the end of each run of ties
    tp = np.cumsum(y[order] > 0.5)
    return sp[last], last + 1, tp[last]


def choose_threshold(y: np.ndarray, p: np.ndarray, rule: str) -> float:
    """The decision threshold (call a rise at p >= it) that `rule` picks on these windows.

    Chosen on the validation split, never on the data it is then scored on: a threshold tuned
    on the scored windows flatters its own PPV. Candidates are the distinct forecasts; F1 ties
    go to the higher threshold (fewer calls), PPV ties at the fallback to the lower (more calls).
    """
    canonical = parse_threshold_rule(rule)
    y, p = _arrays(y, p)
    if y.size == 0:
        raise ValueError("no samples to choose a threshold on")
    if not np.all(np.isfinite(p)):
        raise ValueError("probabilities must be finite to choose a threshold")
    name, _, value = canonical.partition(":")
    if name == "fixed":
        return float(value)
    if name == "base_rate":
        return float(y.mean())
    cand, called, tp = _cumulative(y, p)
    if name == "f1":
        f1 = 2.0 * tp / (called + int(np.sum(y > 0.5)))
        return float(cand[int(np.argmax(f1))])
    ppv = tp / called
    covered = called / y.size >= MIN_COVERAGE  # the quotient, as exact at 1% as the literal
    ok = np.flatnonzero(covered & (ppv >= float(value)))
    if ok.size:
        return float(cand[ok[-1]])
    best = np.flatnonzero(covered & (ppv == ppv[covered].max()))
    return float(cand[best[-1]])
