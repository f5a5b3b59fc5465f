"""TickNet ensembles (`members`): each member learns on its own loss, scoring averages their logits,
and the whole travels in one checkpoint like a single net."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.market.sources import synthetic
from app.ml import checkpoint, nets, training
from app.ml.config import TrainConfig

SIZES = {
    "n_features": 9,
    "seq_len": 16,
    "hidden_size": 8,
    "num_layers": 1,
    "bins": 4,
    "recent": 2,
    "ramped": 5,
}


def test_members_train_apart_and_score_together() -> None:
    torch.manual_seed(0)
    net = nets.build("TickNet", **SIZES, members=3)
    assert isinstance(net, nets.Ensemble) and len(net.members) == 3
    x = torch.randn(5, 16, 9)
    net.train()
    each = net(x)
    assert each.shape == (5, 3)
    assert not torch.allclose(each[:, 0], each[:, 1])  # initialised apart
    net.eval()
    with torch.no_grad():
        mean = net(x)
        one_by_one = torch.stack([m(x) for m in net.members], dim=-1).mean(dim=-1)
    assert mean.shape == (5,)
    torch.testing.assert_close(mean, one_by_one)
    assert isinstance(nets.build("TickNet", **SIZES), nets.TickNet)  # one member: the plain net
    with pytest.raises(ValueError, match="members"):
        nets.build("TickNet", **SIZES, members=0)


def test_an_ensemble_fits_saves_and_serves_as_one_model(tmp_path) -> None:
    ticks = synthetic.generate(4000, seed=2)
    cfg = TrainConfig(members=2, hidden_size=8, bins=4, num_epochs=1, seq_len=16, device="cpu")
    fitted = training.fit(ticks, cfg)
    assert fitted.meta.hparams["members"] == 2
    loaded = checkpoint.load(fitted.save(tmp_path))
    assert isinstance(loaded.net, nets.Ensemble)
    for m in loaded.net.members:  # every member's input ramps were fitted, not left at the placeholder
        assert not torch.equal(m.encode.edges[0], torch.linspace(-3.0, 3.0, 5))
    w = loaded.spec.last_window(ticks)[None]
    np.testing.assert_array_equal(loaded.proba(w), fitted.model.proba(w))
    assert loaded.predict(ticks) == fitted.model.predict(ticks)
    # a single net's checkpoint has no `members`: files written before ensembles stay as they were
    assert "members" not in TrainConfig(hidden_size=8).hparams()
