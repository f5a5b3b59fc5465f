"""The classifiers: shapes, hyper-parameter checks, and that each one learns."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from app.ml import features, nets

ARCHS = ["TickNet", "CNN", "LSTM", "RNNLinear", "GRU", "PureRNN"]
F = len(features.FEATURES)
RAMPED = len(features.RAMPED)


def sizes(arch: str, **kw) -> dict:
    """nets.build's sizes for `arch`: TickNet's input ramps besides the common ones."""
    extra = {"bins": 4, "recent": 2, "ramped": RAMPED} if nets.canonical_arch(arch) == "TickNet" else {}
    return {**extra, **kw}


def small(arch: str, seq_len: int = 12, **kw) -> nn.Module:
    kw = sizes(arch, **{"hidden_size": 8, "num_layers": 2, "dropout": 0.3, **kw})
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
    assert nets.canonical_arch("ticknet") == "TickNet"
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


def test_ticknet_edges_are_fitted_on_the_ramped_columns_only():
    torch.manual_seed(0)
    net = small("TickNet", num_layers=1)
    placeholder = net.encode.edges.clone()
    assert placeholder.shape == (RAMPED, 5)
    torch.testing.assert_close(placeholder[0], torch.linspace(-3.0, 3.0, 5))
    rows = torch.randn(400, F) * torch.arange(1, F + 1)  # each column its own scale
    x = torch.randn(3, 12, F)
    before = net.eval()(x)
    net.fit_inputs(rows)
    q = torch.quantile(rows[:, :RAMPED], torch.linspace(0, 1, 5), dim=0).T
    torch.testing.assert_close(net.encode.edges, q)
    assert "encode.edges" in net.state_dict()  # a buffer: it travels in the checkpoint
    assert not torch.allclose(net(x), before)  # the edges shape what the net sees


def test_ticknet_ramps_are_clamped_between_neighbouring_edges():
    enc = nets.PiecewiseLinear(1, 2)  # edges -3, 0, 3
    out = enc(torch.tensor([[-5.0], [-1.5], [1.5], [9.0]]))
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0], [0.5, 0.0], [1.0, 0.5], [1.0, 1.0]]))


def test_ticknet_sizes_are_checked():
    args = {"n_features": F, "seq_len": 12, "hidden_size": 8, "num_layers": 1, **sizes("TickNet")}
    for name in ("bins", "recent", "ramped"):
        with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
            nets.build("TickNet", **{**args, name: 0})
    with pytest.raises(ValueError, match=r"ramped \(10\) cannot exceed the 9 input columns"):
        nets.build("TickNet", **{**args, "ramped": F + 1})
    assert small("TickNet", num_layers=3).rnn.num_layers == 3


def test_ticknet_sees_more_recent_rows_than_a_short_window_has():
    torch.manual_seed(0)
    net = small("TickNet", seq_len=3, recent=5).eval()
    out = net(torch.randn(4, 3, F))
    assert out.shape == (4,) and torch.isfinite(out).all()


def test_ticknet_scores_a_large_batch_in_chunks_to_the_same_logits():
    torch.manual_seed(0)
    net = small("TickNet", num_layers=1).eval()
    x = torch.randn(1030, 12, F)
    with torch.no_grad():
        whole = net(x)  # more than 1024 windows: scored in chunks
        parts = torch.cat([net(x[:500]), net(x[500:])])
    torch.testing.assert_close(whole, parts, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def synth_batches(synth_ticks):
    data = features.build_dataset(synth_ticks[:3000], 16)
    train = torch.from_numpy(data.split.train)
    return data.windows[train].contiguous(), data.targets[train].contiguous()


@pytest.mark.parametrize("arch", ARCHS)
def test_a_few_steps_lower_the_training_loss(arch, synth_batches):
    x, y = synth_batches
    torch.manual_seed(0)
    net = nets.build(arch, n_features=F, seq_len=16, **sizes(arch, hidden_size=16, num_layers=1))
    if isinstance(net, nets.TickNet):
        net.fit_inputs(x[:, -1])  # as training does: edges at the training rows' quantiles
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
