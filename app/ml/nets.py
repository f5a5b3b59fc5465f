"""The classifiers: (batch, L, features) -> one logit per window.

The three ancestor models (CNN, RNNLinear, PureRNN) keep their shape so old
results stay comparable; GRU is the cheaper recurrent baseline.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

ARCHS = ("CNN", "LSTM", "GRU", "PureRNN")
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
    if arch == "CNN":
        return CNN(n_features, seq_len, hidden_size, num_layers)
    if arch == "LSTM":
        return Recurrent(nn.LSTM, n_features, hidden_size, num_layers, dropout)
    if arch == "GRU":
        return Recurrent(nn.GRU, n_features, hidden_size, num_layers, dropout)
    return PureRNN(n_features, hidden_size, num_layers)
