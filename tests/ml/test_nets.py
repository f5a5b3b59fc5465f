"""The classifiers: shapes, hyper-parameter checks, and that each one learns."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from app.ml import features, nets

ARCHS = ["CNN", "LSTM", "RNNLinear", "GRU", "PureRNN"]
F = len(features.FEATURES)


def small(arch: str, seq_len: int = 12, **kw) -> nn.Module:
    kw = {"hidden_size": 8, "num_layers": 2, "dropout": 0.3, **kw}
    return nets.build(arch, n_features=F, seq_len=seq_len, **kw)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("batch", [1, 5])
def test_output_is_one_logit_per_window(arch, batch):
    torch.manual_seed(0)
    net = small(arch)
    x = torch.randn(batch, 12, F)
    for mode in (net.train, net.eval):
        mode()
        out = net(x)
        assert out.shape == (batch,)
        assert out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_windows_are_scored_independently(arch):
    torch.manual_seed(0)
    net = small(arch).eval()
    x = torch.randn(4, 12, F)
    with torch.no_grad():
        whole = net(x)
        one_by_one = torch.cat([net(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(whole, one_by_one, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(whole, whole[:1].expand(4))  # the input matters


def test_arch_names_and_alias():
    assert nets.canonical_arch("RNNLinear") == "LSTM"
    assert nets.canonical_arch("cnn") == "CNN"
    assert nets.canonical_arch("purernn") == "PureRNN"
    assert isinstance(small("RNNLinear").rnn, nn.LSTM)
    assert isinstance(small("LSTM").rnn, nn.LSTM)
    assert isinstance(small("GRU").rnn, nn.GRU)


def test_layer_counts_follow_num_layers():
    cnn = small("CNN", num_layers=3)
    assert sum(isinstance(m, nn.Conv1d) for m in cnn.modules()) == 3
    assert sum(isinstance(m, nn.BatchNorm1d) for m in cnn.modules()) == 3
    assert all(m.kernel_size == (5,) and m.padding == (2,) for m in cnn.modules() if isinstance(m, nn.Conv1d))
    assert small("LSTM", num_layers=3).rnn.num_layers == 3
    assert small("LSTM", num_layers=3).rnn.dropout == pytest.approx(0.3)
    assert small("GRU", num_layers=1).rnn.dropout == 0.0  # no dropout with nothing to drop between
    assert sum(isinstance(m, nn.LSTMCell) for m in small("PureRNN", num_layers=3).modules()) == 3


def test_pure_rnn_is_the_same_function_as_a_stacked_lstm():
    """The hand-unrolled stack computes exactly what nn.LSTM does with the same weights."""
    torch.manual_seed(0)
    lstm = nets.build("LSTM", n_features=F, seq_len=10, hidden_size=8, num_layers=2, dropout=0.0)
    pure = nets.build("PureRNN", n_features=F, seq_len=10, hidden_size=8, num_layers=2)
    with torch.no_grad():
        for k, cell in enumerate(pure.cells):
            cell.weight_ih.copy_(getattr(lstm.rnn, f"weight_ih_l{k}"))
            cell.weight_hh.copy_(getattr(lstm.rnn, f"weight_hh_l{k}"))
            cell.bias_ih.copy_(getattr(lstm.rnn, f"bias_ih_l{k}"))
            cell.bias_hh.copy_(getattr(lstm.rnn, f"bias_hh_l{k}"))
        pure.head.load_state_dict(lstm.head.state_dict())
        x = torch.randn(3, 10, F)
        torch.testing.assert_close(pure.eval()(x), lstm.eval()(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"hidden_size": 0}, "hidden_size must be a positive integer"),
        ({"hidden_size": -4}, "hidden_size must be a positive integer"),
        ({"hidden_size": 8.5}, "hidden_size must be a positive integer"),
        ({"hidden_size": "8"}, "hidden_size must be a positive integer"),
        ({"hidden_size": True}, "hidden_size must be a positive integer"),
        ({"num_layers": 0}, "num_layers must be a positive integer"),
        ({"num_layers": -1}, "num_layers must be a positive integer"),
        ({"seq_len": 0}, "seq_len must be a positive integer"),
        ({"n_features": 0}, "n_features must be a positive integer"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"dropout": -0.1}, r"dropout must be in \[0, 1\)"),
    ],
)
@pytest.mark.parametrize("arch", ["CNN", "LSTM", "PureRNN"])
def test_bad_hparams_raise_clear_errors(arch, kwargs, match):
    args = {"n_features": F, "seq_len": 12, "hidden_size": 8, "num_layers": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        nets.build(arch, **args)


def test_unknown_arch_lists_the_choices():
    with pytest.raises(ValueError, match="unknown architecture 'Transformer'") as e:
        nets.build("Transformer", n_features=F, seq_len=12, hidden_size=8, num_layers=1)
    for name in ("CNN", "LSTM", "GRU", "PureRNN", "RNNLinear"):
        assert name in str(e.value)


@pytest.fixture(scope="module")
def synth_batches(synth_ticks):
    data = features.build_dataset(synth_ticks[:3000], 16)
    lo, hi = data.split.train
    return data.windows[lo:hi].contiguous(), data.targets[lo:hi].contiguous()


@pytest.mark.parametrize("arch", ARCHS)
def test_a_few_steps_lower_the_training_loss(arch, synth_batches):
    x, y = synth_batches
    torch.manual_seed(0)
    net = nets.build(arch, n_features=F, seq_len=16, hidden_size=16, num_layers=1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    crit = nn.BCEWithLogitsLoss()

    def full_loss() -> float:
        net.eval()
        with torch.no_grad():
            return float(crit(net(x), y))

    before = full_loss()
    gen = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(3):  # a few epochs of mini-batches over the training windows
        for idx in torch.randperm(len(x), generator=gen).split(128):
            loss = crit(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    after = full_loss()
    assert after < before - 0.02, (before, after)
