"""Calibrators: a net's logits -> probabilities that mean what they say.

A net trained with a class-weighted loss ranks windows well, but its raw probabilities
are shifted and often over- or under-confident. A calibrator is fitted on the validation
split, after training, and maps logits to probabilities without changing their order
(Platt's a > 0; isotonic's steps never go down), so AUC is untouched and a threshold on
the probability keeps its meaning. Pure numpy: a calibrator is a handful of floats that a
checkpoint's JSON metadata carries, and reading it back needs neither torch nor sklearn.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from app.ml import metrics

FloatArray = npt.NDArray[np.float64]

KINDS = ("auto", "platt", "isotonic")
# A checkpoint carries the breakpoints in its metadata; past a few thousand they only add
# bytes and steps fitted on a handful of windows each (noise), so fitting merges down to this
# and reading refuses more.
MAX_BREAKPOINTS = 4096
# Isotonic probabilities stay off 0 and 1: a step fitted on all-falls or all-rises would
# otherwise claim certainty, and one surprise would cost an infinite log loss.
P_MIN = 1e-6
_MAX_ITER = 50
_HALVINGS = 40


@dataclass(frozen=True)
class Calibrator:
    """platt: p = sigmoid(a * logit + b). isotonic: p = np.interp(logit, xs, ys), flat past the ends."""

    kind: str
    a: float = 1.0
    b: float = 0.0
    xs: tuple[float, ...] = ()
    ys: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        # normalised and judged here too, so a calibrator that exists is one that can be applied
        object.__setattr__(self, "xs", tuple(float(x) for x in self.xs))
        object.__setattr__(self, "ys", tuple(float(v) for v in self.ys))
        object.__setattr__(self, "a", float(self.a))
        object.__setattr__(self, "b", float(self.b))
        if self.kind == "platt":
            _check_platt(self)
        elif self.kind == "isotonic":
            _check_isotonic(self)
        else:
            raise ValueError(f"unknown calibrator kind {self.kind!r}: expected 'platt' or 'isotonic'")

    @classmethod
    def offset(cls, logit_offset: float) -> Calibrator:
        """A checkpoint from before calibrators: its probabilities were sigmoid(logit + logit_offset)."""
        return cls("platt", a=1.0, b=float(logit_offset))

    def apply(self, logits: npt.ArrayLike) -> FloatArray:
        """Probabilities (float64) in the shape of `logits`."""
        z = np.asarray(logits, dtype=np.float64)
        if self.kind == "platt":
            return _sigmoid(self.a * z + self.b)
        out = np.interp(z.ravel(), np.asarray(self.xs), np.asarray(self.ys))
        return np.asarray(out, dtype=np.float64).reshape(z.shape)

    def to_dict(self) -> dict[str, Any]:
        """Plain floats and lists: JSON as is, and read back exactly by from_dict."""
        if self.kind == "platt":
            return {"kind": "platt", "a": self.a, "b": self.b}
        return {"kind": "isotonic", "xs": list(self.xs), "ys": list(self.ys)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibrator:
        """Judges what a file says before trusting it; ValueError says what is wrong."""
        if not isinstance(d, Mapping):
            raise ValueError(f"a calibrator is a mapping, got {type(d).__name__}")
        kind = d.get("kind")
        keys = {"platt": ("kind", "a", "b"), "isotonic": ("kind", "xs", "ys")}.get(str(kind))
        if not isinstance(kind, str) or keys is None:
            raise ValueError(f"unknown calibrator kind {kind!r}: expected 'platt' or 'isotonic'")
        if set(d) != set(keys):
            raise ValueError(f"a {kind} calibrator has the keys {list(keys)}, got {sorted(map(str, d))}")
        if kind == "platt":
            return cls("platt", a=_real(d["a"], "a"), b=_real(d["b"], "b"))
        return cls("isotonic", xs=_reals(d["xs"], "xs"), ys=_reals(d["ys"], "ys"))


def _real(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise ValueError(f"calibrator {name} must be a number, got {str(v)[:50]!r}")
    return float(v)


def _reals(v: Any, name: str) -> tuple[float, ...]:
    if isinstance(v, str | bytes) or not isinstance(v, Sequence):
        raise ValueError(f"calibrator {name} must be a list of numbers, got {type(v).__name__}")
    if len(v) > MAX_BREAKPOINTS:
        raise ValueError(f"calibrator {name} has {len(v)} breakpoints; at most {MAX_BREAKPOINTS}")
    return tuple(_real(x, name) for x in v)


def _check_platt(c: Calibrator) -> None:
    if not (math.isfinite(c.a) and math.isfinite(c.b)):
        raise ValueError(f"platt calibrator needs finite a and b, got a={c.a}, b={c.b}")
    if c.a <= 0:
        raise ValueError(f"platt calibrator needs a > 0 (a <= 0 flattens or inverts the ranking), got {c.a}")
    if c.xs or c.ys:
        raise ValueError("a platt calibrator has no breakpoints (xs, ys)")


def _check_isotonic(c: Calibrator) -> None:
    if (c.a, c.b) != (1.0, 0.0):
        raise ValueError("an isotonic calibrator has no a or b")
    xs, ys = np.asarray(c.xs), np.asarray(c.ys)
    if xs.size != ys.size:
        raise ValueError(f"isotonic xs and ys differ in length: {xs.size} vs {ys.size}")
    if not 1 <= xs.size <= MAX_BREAKPOINTS:
        raise ValueError(f"isotonic calibrator needs 1 to {MAX_BREAKPOINTS} breakpoints, got {xs.size}")
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
        raise ValueError("isotonic xs and ys must be finite")
    if np.any(np.diff(xs) <= 0):
        raise ValueError("isotonic xs (logits) must be strictly increasing")
    if np.any(np.diff(ys) < 0):
        raise ValueError("isotonic ys (probabilities) must never decrease: the ranking would change")
    if ys[0] < 0 or ys[-1] > 1:
        raise ValueError(f"isotonic ys must be probabilities in [0, 1], got {ys[0]} .. {ys[-1]}")


def _sigmoid(eta: FloatArray) -> FloatArray:
    # exp(-log(1 + e^-eta)): no overflow at either end, exact in the tails
    return np.asarray(np.exp(-np.logaddexp(0.0, -eta)), dtype=np.float64)


def _xy(logits: npt.ArrayLike, y: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    z = np.asarray(logits, dtype=np.float64).ravel()
    t = np.asarray(y, dtype=np.float64).ravel()
    if z.size == 0:
        raise ValueError("cannot calibrate on no samples")
    if z.size != t.size:
        raise ValueError(f"logits and labels differ in length: {z.size} vs {t.size}")
    if not np.all(np.isfinite(z)):
        raise ValueError(f"logits must be finite; {int(np.sum(~np.isfinite(z)))} are not")
    if not np.all((t == 0) | (t == 1)):
        raise ValueError("labels must be 0 (no rise) or 1 (rise)")
    if t.min() == t.max():
        raise ValueError(f"cannot calibrate on one class: every label is {int(t[0])}")
    return z, t


def _mean_loss(eta: FloatArray, t: FloatArray) -> float:
    """Mean log loss of sigmoid(eta), computed from the logit so that it never overflows."""
    return float(np.mean(np.logaddexp(0.0, eta) - t * eta))


def _newton(cols: FloatArray, base: FloatArray, t: FloatArray, w0: FloatArray) -> FloatArray:
    """Minimises the mean log loss of sigmoid(base + w @ cols) over w.

    The loss is convex, so Newton converges in a few steps from the identity; halving the step
    until the loss does not rise guards the first steps and data that is nearly separable, and
    the iteration cap bounds the latter, whose optimum lies at infinity.
    """
    w, n = w0.copy(), t.size
    eta = base + w @ cols
    loss = _mean_loss(eta, t)
    for _ in range(_MAX_ITER):
        s = _sigmoid(eta)
        grad = cols @ (s - t) / n
        hess = (cols * (s * (1.0 - s))) @ cols.T / n
        try:
            step = np.linalg.solve(hess + 1e-12 * np.eye(w.size), grad)
        except np.linalg.LinAlgError:
            break
        if not np.all(np.isfinite(step)):
            break
        scale = 1.0
        for _ in range(_HALVINGS):
            w_new = w - scale * step
            eta_new = base + w_new @ cols
            new = _mean_loss(eta_new, t)
            if new <= loss:
                break
            scale /= 2
        else:
            break  # no step lowers the loss: converged as far as float64 can tell
        w, eta, loss = w_new, eta_new, new
        if np.max(np.abs(scale * step)) <= 1e-10 * (1.0 + np.max(np.abs(w))):
            break
    return w


def fit_platt(logits: npt.ArrayLike, y: npt.ArrayLike) -> Calibrator:
    """p = sigmoid(a * logit + b) by maximum likelihood.

    a <= 0 would flatten or invert the net's ranking; a fit that wants it (a net whose logits
    are noise or backwards on this data) keeps a = 1 and fits the shift b alone.
    """
    z, t = _xy(logits, y)
    if np.ptp(z) > 0:
        cols = np.stack([z, np.ones_like(z)])
        a, b = _newton(cols, np.zeros_like(z), t, np.array([1.0, 0.0]))
        if a > 0 and math.isfinite(a) and math.isfinite(b):
            return Calibrator("platt", a=float(a), b=float(b))
    (b,) = _newton(np.ones((1, z.size)), z, t, np.zeros(1))
    return Calibrator("platt", a=1.0, b=float(b))


def _groups(z: FloatArray) -> npt.NDArray[np.int64]:
    """For sorted logits, the index of the first window of each window's group.

    A group is a run of tied logits (one input to PAV: ties must get one probability). When
    there are more than MAX_BREAKPOINTS groups, neighbouring groups are merged into that many
    bins of about equal count, so PAV's blocks, hence the breakpoints, stay within the cap.
    """
    new = np.r_[True, z[1:] != z[:-1]]
    first = np.maximum.accumulate(np.where(new, np.arange(z.size), 0))
    if int(new.sum()) > MAX_BREAKPOINTS:
        first = first * MAX_BREAKPOINTS // z.size
    return np.asarray(first, dtype=np.int64)


def _pav(rows: list[tuple[float, float, float, float, float]]) -> list[list[float]]:
    """Pool-adjacent-violators over (logit sum, target sum, weight, lowest, highest logit) rows.

    Blocks with equal means are pooled too: the step function is the same, with fewer breakpoints.
    """
    blocks: list[list[float]] = []
    for row in rows:
        blocks.append(list(row))
        while len(blocks) > 1 and blocks[-2][1] * blocks[-1][2] >= blocks[-1][1] * blocks[-2][2]:
            last = blocks.pop()
            prev = blocks[-1]
            prev[0] += last[0]
            prev[1] += last[1]
            prev[2] += last[2]
            prev[4] = last[4]
    return blocks


def fit_isotonic(logits: npt.ArrayLike, y: npt.ArrayLike) -> Calibrator:
    """The best non-decreasing step function of the logit, joined linearly between block means."""
    z, t = _xy(logits, y)
    order = np.argsort(z, kind="stable")
    zs, ts = z[order], t[order]
    group = _groups(zs)
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    ends = np.r_[starts[1:], zs.size]
    rows = zip(
        np.add.reduceat(zs, starts).tolist(),
        np.add.reduceat(ts, starts).tolist(),
        (ends - starts).astype(np.float64).tolist(),
        zs[starts].tolist(),
        zs[ends - 1].tolist(),
        strict=True,
    )
    blocks = np.array(_pav(list(rows)))
    # the mean of a block lies within its logits; clipping keeps float rounding from breaking
    # the strict order of xs (blocks are disjoint runs of distinct sorted logits)
    xs = np.clip(blocks[:, 0] / blocks[:, 2], blocks[:, 3], blocks[:, 4])
    ys = np.clip(blocks[:, 1] / blocks[:, 2], P_MIN, 1.0 - P_MIN)
    return Calibrator("isotonic", xs=tuple(xs.tolist()), ys=tuple(ys.tolist()))


_FITTERS: dict[str, Callable[[npt.ArrayLike, npt.ArrayLike], Calibrator]] = {
    "platt": fit_platt,
    "isotonic": fit_isotonic,
}


def choose_kind(logits: npt.ArrayLike, y: npt.ArrayLike) -> tuple[str, dict[str, float]]:
    """Platt or isotonic, by measurement, and the summed held-out log losses behind the choice.

    Chronological 2-fold: fit each candidate on one half, score the other, both ways. Isotonic
    can bend to any monotone link but overfits small data; Platt is the simpler and wins ties.
    When a half holds one class nothing can be measured: Platt, with no scores.
    """
    z, t = _xy(logits, y)
    half = z.size // 2
    parts = ((slice(0, half), slice(half, None)), (slice(half, None), slice(0, half)))
    if any(t[part].min() == t[part].max() for part, _ in parts):
        return "platt", {}
    scores = dict.fromkeys(_FITTERS, 0.0)
    for fit_part, score_part in parts:
        for kind, fitter in _FITTERS.items():
            cal = fitter(z[fit_part], t[fit_part])
            scores[kind] += metrics.log_loss(t[score_part], cal.apply(z[score_part]))
    return ("isotonic" if scores["isotonic"] < scores["platt"] else "platt"), scores


def fit(kind: str, logits: npt.ArrayLike, y: npt.ArrayLike) -> Calibrator:
    """A calibrator of `kind` ("auto" measures which) fitted on all of the given validation data."""
    if kind not in KINDS:
        raise ValueError(f"unknown calibration {kind!r}: expected one of {', '.join(KINDS)}")
    z, t = _xy(logits, y)
    if kind == "auto":
        kind, _ = choose_kind(z, t)
    return _FITTERS[kind](z, t)
