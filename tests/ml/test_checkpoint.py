"""Checkpoints: round trip, safe loading, each bad file, atomic writes."""

from __future__ import annotations

import pathlib
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from app.ml import checkpoint, features, nets
from app.ml.checkpoint import CheckpointError

SEQ_LEN = 10
F = len(features.FEATURES)


def make_meta(arch: str = "GRU", hidden_size: int = 8, num_layers: int = 1, **extra) -> dict:
    rng = np.random.default_rng(0)
    norm = features.Normalizer(rng.normal(size=F).astype(np.float32),
                               rng.uniform(0.5, 2, size=F).astype(np.float32))
    meta = {
        "id": f"test-{arch.lower()}",
        "arch": arch,
        "hparams": {"hidden_size": hidden_size, "num_layers": num_layers},
        "seq_len": SEQ_LEN,
        "horizon": 1,
        "features": list(features.FEATURES),
        "norm": norm.to_dict(),
        "logit_offset": -0.7,
        "threshold": 0.33,
        "metrics": {"val": {"auc": 0.6, "n": 100.0}},
        "data": {"exchange": "synthetic", "symbol": "BTC-USD", "start_time": 1.0, "end_time": 2.0},
        "created_at": checkpoint.utc_now_iso(),
        "versions": checkpoint.versions(),
    }
    meta.update(extra)
    return meta


def make_net(meta: dict) -> torch.nn.Module:
    torch.manual_seed(1)
    return nets.build(meta["arch"], n_features=F, seq_len=meta["seq_len"], **meta["hparams"])


def saved(tmp_path: Path, arch: str = "GRU", name: str = "m.pt",
          **kw) -> tuple[Path, torch.nn.Module, dict]:
    meta = make_meta(arch, **kw)
    net = make_net(meta)
    path = checkpoint.save(tmp_path / name, net.state_dict(), meta)
    return path, net, meta


@pytest.mark.parametrize("arch", ["CNN", "LSTM", "GRU", "PureRNN"])
def test_round_trip_gives_identical_outputs(tmp_path, arch):
    path, net, meta = saved(tmp_path, arch, num_layers=2)
    if arch == "CNN":  # give the batch norms non-trivial running statistics to carry over
        net.train()
        with torch.no_grad():
            net(torch.randn(64, SEQ_LEN, F) * 3 + 1)
        path = checkpoint.save(path, net.state_dict(), meta)
    model = checkpoint.load(path)
    assert model.id == meta["id"]
    assert model.seq_len == SEQ_LEN and model.threshold == pytest.approx(0.33)
    assert model.meta == meta
    assert not model.net.training
    np.testing.assert_array_equal(model.norm.mean, np.asarray(meta["norm"]["mean"], np.float32))
    x = torch.randn(7, SEQ_LEN, F)
    net.eval()
    with torch.no_grad():
        expected = torch.sigmoid(net(x) + meta["logit_offset"]).numpy()
    np.testing.assert_array_equal(model.proba(x), expected)


def test_predict_from_ticks_uses_the_saved_normalisation(tmp_path, make_ticks):
    path, net, meta = saved(tmp_path)
    model = checkpoint.load(path)
    ticks = make_ticks(40)
    norm = features.Normalizer.from_dict(meta["norm"])
    w = torch.from_numpy(features.last_window(ticks, SEQ_LEN, norm))[None]
    with torch.no_grad():
        expected = float(torch.sigmoid(net.eval()(w) + meta["logit_offset"])[0])
    assert model.predict(ticks) == pytest.approx(expected, abs=1e-7)
    with pytest.raises(ValueError, match="need at least 11 ticks"):
        model.predict(ticks[:SEQ_LEN])


def test_saved_file_loads_with_weights_only(tmp_path):
    path, _, meta = saved(tmp_path)
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == checkpoint.FORMAT
    assert payload["format_version"] == checkpoint.FORMAT_VERSION
    assert payload["meta"] == meta
    assert all(t.device.type == "cpu" for t in payload["state_dict"].values())
    assert checkpoint.read(path)["meta"] == meta


class _Exploit:
    """Unpickling this would create a file: proof that loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_pickled_python_objects_are_rejected_without_running_them(tmp_path):
    marker = tmp_path / "ran"
    meta = make_meta()
    meta["payload"] = _Exploit(marker)
    net = make_net(meta)
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "format_version": checkpoint.FORMAT_VERSION,
                "meta": meta, "state_dict": net.state_dict()}, path)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        checkpoint.load(path)
    assert not marker.exists()


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.load(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.load(tmp_path)  # a folder is not a checkpoint either


@pytest.mark.parametrize("keep", [0.5, 0.1, 0.8, 0.95, -1])
def test_truncated_file(tmp_path, keep):
    """A copy or download cut short, anywhere (half the bytes, most of them, all but one)."""
    path, _, _ = saved(tmp_path)
    data = path.read_bytes()
    n = len(data) - 1 if keep == -1 else int(len(data) * keep)
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointError, match="truncated"):
        checkpoint.load(path)


@pytest.mark.parametrize(
    "content",
    [np.random.default_rng(seed).bytes(size) for seed, size in ((0, 4096), (17, 4096), (21, 4096),
                                                                (21, 3), (1, 1))]
    + [b"", b"\n", b"time,price,amount\n1,2,3\n"],
    ids=["rand0", "rand17", "rand21", "rand21-3B", "rand1-1B", "empty", "newline", "csv"],
)
def test_random_or_foreign_bytes(tmp_path, content):
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        checkpoint.load(path)


@pytest.mark.parametrize("obj", [{"a": 1}, [1, 2, 3], {"state_dict": {}, "meta": {}},
                                 torch.zeros(3)])
def test_torch_file_that_is_not_a_tickcast_checkpoint(tmp_path, obj):
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="not a tickcast checkpoint"):
        checkpoint.load(path)


def test_a_plain_state_dict_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(make_net(make_meta()).state_dict(), path)
    with pytest.raises(CheckpointError, match="not a tickcast checkpoint"):
        checkpoint.load(path)


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_unknown_format_version(tmp_path, version):
    meta = make_meta()
    path = tmp_path / "future.pt"
    torch.save({"format": checkpoint.FORMAT, "format_version": version, "meta": meta,
                "state_dict": make_net(meta).state_dict()}, path)
    with pytest.raises(CheckpointError, match=f"format version {version!r}"):
        checkpoint.load(path)


def test_missing_metadata_or_weights(tmp_path):
    path = tmp_path / "bare.pt"
    torch.save({"format": checkpoint.FORMAT, "format_version": checkpoint.FORMAT_VERSION,
                "meta": make_meta()}, path)
    with pytest.raises(CheckpointError, match="lacks its metadata or weights"):
        checkpoint.load(path)


def test_weights_that_do_not_fit_the_metadata(tmp_path):
    meta = make_meta(hidden_size=16)
    wrong = make_net(make_meta(hidden_size=8))
    path = checkpoint.save(tmp_path / "mismatch.pt", wrong.state_dict(), meta)
    with pytest.raises(CheckpointError, match="weights do not fit"):
        checkpoint.load(path)
    meta_cnn = make_meta("CNN")
    path = checkpoint.save(tmp_path / "arch.pt", wrong.state_dict(), meta_cnn)
    with pytest.raises(CheckpointError, match="weights do not fit"):
        checkpoint.load(path)


@pytest.mark.parametrize("broken", [
    {"arch": "Transformer"},
    {"hparams": {"hidden_size": 0, "num_layers": 1}},
    {"hparams": {"hidden_size": 8, "num_layers": 1, "colour": "red"}},
])
def test_metadata_that_cannot_build_a_net(tmp_path, broken):
    meta = make_meta()
    net = make_net(meta)
    meta.update(broken)
    path = checkpoint.save(tmp_path / "bad.pt", net.state_dict(), meta)
    with pytest.raises(CheckpointError, match="metadata does not describe a usable model"):
        checkpoint.load(path)


@pytest.mark.parametrize("key", ["arch", "hparams", "seq_len", "norm", "logit_offset",
                                 "threshold"])
def test_metadata_missing_a_required_field(tmp_path, key):
    """A model that loads must be usable: a field predict() needs is checked at load time."""
    meta = make_meta()
    net = make_net(meta)
    del meta[key]
    path = checkpoint.save(tmp_path / "partial.pt", net.state_dict(), meta)
    with pytest.raises(CheckpointError):
        checkpoint.load(path)


def test_other_features_are_rejected(tmp_path):
    path, _, _ = saved(tmp_path, features=["price_z"])
    with pytest.raises(CheckpointError, match="retrain"):
        checkpoint.load(path)


def test_atomic_save_leaves_no_temp_files(tmp_path):
    path, _, _ = saved(tmp_path)
    saved(tmp_path)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
    assert zipfile.is_zipfile(path)


def test_failed_save_keeps_the_old_file(tmp_path):
    path, _, meta = saved(tmp_path)
    before = path.read_bytes()
    bad_meta = {**meta, "lock": threading.Lock()}  # cannot be pickled
    with pytest.raises(TypeError, match="pickle"):
        checkpoint.save(path, make_net(meta).state_dict(), bad_meta)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
    assert checkpoint.load(path).meta == meta


def test_save_creates_the_folder(tmp_path):
    meta = make_meta()
    net = make_net(meta)
    path = checkpoint.save(tmp_path / "a" / "b" / "m.pt", net.state_dict(), meta)
    assert path.is_file()


def test_train_state_is_kept(tmp_path):
    meta = make_meta()
    net = make_net(meta)
    opt = torch.optim.Adam(net.parameters())
    path = checkpoint.save(tmp_path / "s.pt", net.state_dict(), meta,
                           train_state={"epoch": 3, "optimizer": opt.state_dict(), "history": []})
    ts = checkpoint.read(path)["train_state"]
    assert ts["epoch"] == 3
    opt.load_state_dict(ts["optimizer"])


def test_load_onto_a_named_device(tmp_path):
    path, _, _ = saved(tmp_path)
    model = checkpoint.load(path, device="cpu")
    assert model.device == torch.device("cpu")
    assert all(p.device.type == "cpu" for p in model.net.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_load_onto_cuda(tmp_path):
    path, net, meta = saved(tmp_path)
    model = checkpoint.load(path, device="cuda")
    assert all(p.device.type == "cuda" for p in model.net.parameters())
    x = torch.randn(3, SEQ_LEN, F)
    with torch.no_grad():
        expected = torch.sigmoid(net.eval()(x) + meta["logit_offset"]).numpy()
    np.testing.assert_allclose(model.proba(x), expected, rtol=1e-4, atol=1e-5)


def test_best_device():
    assert checkpoint.best_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert checkpoint.best_device("auto").type in ("cpu", "mps")
        with pytest.raises(ValueError, match="CUDA is not available"):
            checkpoint.best_device("cuda")


def test_model_ids_are_safe_file_names():
    ids = {checkpoint.new_model_id("PureRNN") for _ in range(20)}
    assert len(ids) == 20
    assert all(checkpoint.MODEL_ID.match(i) and i.startswith("purernn-") for i in ids)
