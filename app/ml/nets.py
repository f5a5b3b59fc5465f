"""The classifiers: (batch, L, features) -> one logit per window.

The three ancestor models (CNN, RNNLinear, PureRNN) keep their shape so old
results stay comparable; GRU is the cheaper recurrent baseline. TickNet is the
default: what measurement on real trades said a net needs to beat a
gradient-boosted tree (README, "Model quality").
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

ARCHS = ("TickNet", "CNN", "LSTM", "GRU", "PureRNN")
ALIASES = {"RNNLinear": "LSTM"}


def canonical_arch(arch: str) -> str:
    """Resolve aliases and case ('cnn', 'RNNLinear'); unknown names raise with the choices."""
    name = ALIASES.get(arch, arch)
    for a in ARCHS:
        if a.lower() == name.lower():
            return a
    choices = ", ".join(ARCHS + tuple(ALIASES))
    raise ValueError(f"unknown architecture {arch!r}; choose one of {choices}")


class CNN(nn.Module):
    """Conv1d(k=5) + BatchNorm + LeakyReLU blocks over time, then one Linear over the whole map."""

    def __init__(self, n_features: int, seq_len: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = n_features
        for _ in range(num_layers):
            blocks += [
                nn.Conv1d(width, hidden_size, kernel_size=5, padding=2),
                nn.BatchNorm1d(hidden_size),
                nn.LeakyReLU(),
            ]
            width = hidden_size
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(seq_len * hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h: torch.Tensor = self.body(x.transpose(1, 2))  # convolve over time: (B, F, L)
        logits: torch.Tensor = self.head(h.flatten(1))
        return logits.squeeze(-1)


class Recurrent(nn.Module):
    """nn.LSTM / nn.GRU, then a Linear on the last step's output."""

    def __init__(
        self,
        cell: type[nn.LSTM] | type[nn.GRU],
        n_features: int,
        hidden_size: int,
        num_layers: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.rnn = cell(
            n_features,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        logits: torch.Tensor = self.head(out[:, -1])
        return logits.squeeze(-1)


class PureRNN(nn.Module):
    """A stack of LSTMCells unrolled by hand (the ancestor's third model): slow, but every
    step is visible, which is the point of keeping it."""

    def __init__(self, n_features: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        sizes = [n_features] + [hidden_size] * num_layers
        self.hidden_size = hidden_size
        self.cells = nn.ModuleList(nn.LSTMCell(a, hidden_size) for a in sizes[:-1])
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        h = self.hidden_size
        states = [(x.new_zeros(batch, h), x.new_zeros(batch, h)) for _ in self.cells]
        for t in range(x.shape[1]):
            inp = x[:, t]
            for k, cell in enumerate(self.cells):
                states[k] = cell(inp, states[k])
                inp = states[k][0]
        logits: torch.Tensor = self.head(states[-1][0])
        return logits.squeeze(-1)


class PiecewiseLinear(nn.Module):
    """Each input column as `bins` ramps between its training quantiles (Gorishniy et al., "On
    Embeddings for Numerical Features in Tabular Deep Learning", 2022).

    Next-tick direction hangs on thresholds: whether the last move was one price
    increment or many, a dust fill or a block. A tree finds such thresholds by
    itself; a net fed one standardised scalar per column has to bend a smooth
    function around them. Given the ramps it only has to weigh them. The edges
    are buffers fitted once on the training rows (`fit`), so they travel in the
    checkpoint with the weights."""

    def __init__(self, n_features: int, bins: int) -> None:
        super().__init__()
        grid = torch.linspace(-3.0, 3.0, bins + 1)  # placeholder until `fit`: standard-normal-ish
        self.edges: torch.Tensor
        self.register_buffer("edges", grid.repeat(n_features, 1))

    @torch.no_grad()
    def fit(self, rows: torch.Tensor, max_rows: int = 200_000) -> None:
        """Edges at the quantiles of each column of the (standardised) training rows."""
        if rows.shape[0] > max_rows:  # quantiles of an even subsample: the same edges, bounded cost
            rows = rows[torch.linspace(0, rows.shape[0] - 1, max_rows).long()]
        q = torch.linspace(0, 1, self.edges.shape[1], device=rows.device)
        self.edges.copy_(torch.quantile(rows.float(), q, dim=0).T.to(self.edges.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.edges[:, :-1], self.edges[:, 1:]
        ramps = ((x.unsqueeze(-1) - lo) / (hi - lo).clamp_min(1e-6)).clamp(0.0, 1.0)
        return ramps.flatten(-2)  # (..., F * bins)


class TickNet(nn.Module):
    """Piecewise-linear inputs, a GRU over the window for context, and the last `recent` rows
    seen directly by the head.

    Measured on the Bitstamp file (README): the last one or two trades carry most of
    the next-tick signal, and a net given the whole window flat (the CNN's head)
    overfits the rest; the recurrent summary adds what the older trades know."""

    def __init__(
        self,
        n_features: int,
        hidden_size: int,
        num_layers: int,
        dropout: float,
        bins: int,
        recent: int,
        ramped: int,
    ) -> None:
        super().__init__()
        if ramped > n_features:
            raise ValueError(f"ramped ({ramped}) cannot exceed the {n_features} input columns")
        self.recent, self.ramped = recent, ramped
        self.encode = PiecewiseLinear(ramped, bins)
        self.embed = nn.Sequential(nn.Linear(n_features + ramped * bins, hidden_size), nn.GELU())
        self.rnn = nn.GRU(
            hidden_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.head = nn.Sequential(
            nn.Linear(hidden_size * (recent + 1), hidden_size),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, 1),
        )

    def fit_inputs(self, rows: torch.Tensor) -> None:
        self.encode.fit(rows[:, : self.ramped])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and x.shape[0] > 1024:  # bound the (B, L, F * bins) ramps when scoring
            return torch.cat([self(x[a : a + 1024]) for a in range(0, x.shape[0], 1024)])
        return self._from_embedded(self.embed(torch.cat([x, self.encode(x[..., : self.ramped])], dim=-1)))

    def _from_embedded(self, e: torch.Tensor) -> torch.Tensor:
        """Logits of (B, L, H) embedded windows: the GRU's summary beside the last rows."""
        out, _ = self.rnn(e)
        k = min(self.recent, e.shape[1])
        h = torch.cat(
            [out[:, -1], e[:, -k:].flatten(1), e.new_zeros(e.shape[0], (self.recent - k) * e.shape[2])], 1
        )
        logits: torch.Tensor = self.head(h)
        return logits.squeeze(-1)

    def forward_series(self, rows: torch.Tensor, seq_len: int, chunk: int = 512) -> torch.Tensor:
        """forward() of every window of `seq_len` consecutive rows of (N, F) `rows`, in order.

        A live market scores each tick on the window ending at it, so neighbouring windows
        share all but one row: the ramps and the embedding (most of a window's cost) are
        computed once per row here instead of once per row per window."""
        n = rows.shape[0] - seq_len + 1
        out = []
        for a in range(0, max(n, 0), chunk):
            part = rows[a : min(n, a + chunk) + seq_len - 1]
            e = self.embed(torch.cat([part, self.encode(part[..., : self.ramped])], dim=-1))
            out.append(self._from_embedded(e.unfold(0, seq_len, 1).transpose(1, 2)))
        return torch.cat(out) if out else rows.new_zeros(0)


class Ensemble(nn.Module):
    """Several TickNets, initialised apart and trained side by side on the same batches, whose
    logits are averaged when scoring (a deep ensemble). Training returns every member's logit,
    (B, K), so each learns on its own loss; scoring returns their mean, (B,)."""

    def __init__(self, members: list[TickNet]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def fit_inputs(self, rows: torch.Tensor) -> None:
        for m in self.members:
            m.fit_inputs(rows)  # type: ignore[operator]  # ModuleList items are TickNets

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.stack([m(x) for m in self.members], dim=-1)
        return out if self.training else out.mean(dim=-1)

    def forward_series(self, rows: torch.Tensor, seq_len: int) -> torch.Tensor:
        """The members' mean logit on every window of rows (see TickNet.forward_series)."""
        return torch.stack([m.forward_series(rows, seq_len) for m in self.members], dim=-1).mean(dim=-1)  # type: ignore[operator]


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def build(
    arch: str,
    *,
    n_features: int,
    seq_len: int,
    hidden_size: int,
    num_layers: int,
    dropout: float = 0.0,
    bins: int = 0,
    recent: int = 0,
    ramped: int = 0,
    members: int = 1,
) -> nn.Module:
    """The one constructor: training, checkpoint loading and benchmarks all come through here.

    The sizes have no defaults here: a config (`app.ml.config.TrainConfig`) or a checkpoint
    says them. No dropout unless asked: the CNN and PureRNN have none to set."""
    arch = canonical_arch(arch)
    n_features = _positive_int("n_features", n_features)
    seq_len = _positive_int("seq_len", seq_len)
    hidden_size = _positive_int("hidden_size", hidden_size)
    num_layers = _positive_int("num_layers", num_layers)
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if arch == "TickNet":
        b, r, ramp = (
            _positive_int(k, v) for k, v in (("bins", bins), ("recent", recent), ("ramped", ramped))
        )
        k = _positive_int("members", members)
        made = [TickNet(n_features, hidden_size, num_layers, dropout, b, r, ramp) for _ in range(k)]
        return made[0] if k == 1 else Ensemble(made)
    if arch == "CNN":
        return CNN(n_features, seq_len, hidden_size, num_layers)
    if arch == "LSTM":
        return Recurrent(nn.LSTM, n_features, hidden_size, num_layers, dropout)
    if arch == "GRU":
        return Recurrent(nn.GRU, n_features, hidden_size, num_layers, dropout)
    return PureRNN(n_features, hidden_size, num_layers)
