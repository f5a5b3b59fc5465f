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
from app.ml.config import TrainConfig
from app.ml.meta import META_VERSION, ModelMeta

SEQ_LEN = 10
F = len(features.FEATURES)
F_LEGACY = len(features.LEGACY_FEATURES)  # what files from before named columns carry
TICKNET_SIZES = {"bins": 4, "recent": 2, "ramped": len(features.RAMPED)}


def make_meta(arch: str = "GRU", hidden_size: int = 8, num_layers: int = 1, **extra) -> dict:
    rng = np.random.default_rng(0)
    norm = features.Normalizer(
        rng.normal(size=F).astype(np.float32), rng.uniform(0.5, 2, size=F).astype(np.float32)
    )
    meta = {
        "id": f"test-{arch.lower()}",
        "arch": arch,
        "hparams": {"hidden_size": hidden_size, "num_layers": num_layers}
        | (TICKNET_SIZES if arch == "TickNet" else {}),
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


def saved(tmp_path: Path, arch: str = "GRU", name: str = "m.pt", **kw) -> tuple[Path, torch.nn.Module, dict]:
    meta = make_meta(arch, **kw)
    net = make_net(meta)
    path = checkpoint.save(tmp_path / name, net.state_dict(), meta)
    return path, net, meta


@pytest.mark.parametrize("arch", ["TickNet", "CNN", "LSTM", "GRU", "PureRNN"])
def test_round_trip_gives_identical_outputs(tmp_path, arch):
    path, net, meta = saved(tmp_path, arch, num_layers=2)
    if arch == "CNN":  # give the batch norms non-trivial running statistics to carry over
        net.train()
        with torch.no_grad():
            net(torch.randn(64, SEQ_LEN, F) * 3 + 1)
        path = checkpoint.save(path, net.state_dict(), meta)
    if arch == "TickNet":  # fitted input edges, not the placeholder grid, must carry over
        net.fit_inputs(torch.randn(500, F) * 2 + 0.5)
        path = checkpoint.save(path, net.state_dict(), meta)
    model = checkpoint.load(path)
    assert model.id == meta["id"]
    assert model.seq_len == SEQ_LEN and model.threshold == pytest.approx(0.33)
    assert model.meta == ModelMeta.from_dict(meta)
    assert not model.net.training
    np.testing.assert_array_equal(model.norm.mean, np.asarray(meta["norm"]["mean"], np.float32))
    if arch == "TickNet":
        torch.testing.assert_close(model.net.encode.edges, net.encode.edges, rtol=0, atol=0)
    x = torch.randn(7, SEQ_LEN, F)
    net.eval()
    with torch.no_grad():
        logits = net(x).double().numpy()
    np.testing.assert_array_equal(model.logits(x), logits)  # the same net, bit for bit
    # a file without a calibrator is calibrated by its logit offset, in float64
    expected = 1.0 / (1.0 + np.exp(-(logits + meta["logit_offset"])))
    assert model.proba(x).dtype == np.float64
    np.testing.assert_allclose(model.proba(x), expected, rtol=1e-12, atol=0)


def test_predict_from_ticks_uses_the_saved_normalisation(tmp_path, make_ticks):
    path, net, meta = saved(tmp_path)
    model = checkpoint.load(path)
    ticks = make_ticks(40)
    norm = features.Normalizer.from_dict(meta["norm"])
    spec = features.WindowSpec(SEQ_LEN, norm, tuple(meta["features"]))
    assert (model.spec.seq_len, model.spec.names, model.spec.target) == (SEQ_LEN, features.FEATURES, "tick")
    np.testing.assert_array_equal(model.spec.norm.std, norm.std)
    w = torch.from_numpy(spec.last_window(ticks))[None]
    with torch.no_grad():
        expected = float(torch.sigmoid(net.eval()(w).double() + meta["logit_offset"])[0])
    assert model.predict(ticks) == pytest.approx(expected, rel=1e-12)
    identity = features.Normalizer(np.zeros(F, np.float32), np.ones(F, np.float32))
    unnormalised = torch.from_numpy(features.WindowSpec(SEQ_LEN, identity, spec.names).last_window(ticks))[
        None
    ]
    with torch.no_grad():
        assert float(torch.sigmoid(net(unnormalised) + meta["logit_offset"])[0]) != pytest.approx(expected)
    with pytest.raises(ValueError, match=f"need at least {spec.min_ticks} ticks"):
        model.predict(ticks[: spec.min_ticks - 1])


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
    torch.save(
        {
            "format": checkpoint.FORMAT,
            "format_version": checkpoint.FORMAT_VERSION,
            "meta": meta,
            "state_dict": net.state_dict(),
        },
        path,
    )
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
    [
        np.random.default_rng(seed).bytes(size)
        for seed, size in ((0, 4096), (17, 4096), (21, 4096), (21, 3), (1, 1))
    ]
    + [b"", b"\n", b"time,price,amount\n1,2,3\n"],
    ids=["rand0", "rand17", "rand21", "rand21-3B", "rand1-1B", "empty", "newline", "csv"],
)
def test_random_or_foreign_bytes(tmp_path, content):
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        checkpoint.load(path)


@pytest.mark.parametrize("obj", [{"a": 1}, [1, 2, 3], {"state_dict": {}, "meta": {}}, torch.zeros(3)])
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
    torch.save(
        {
            "format": checkpoint.FORMAT,
            "format_version": version,
            "meta": meta,
            "state_dict": make_net(meta).state_dict(),
        },
        path,
    )
    with pytest.raises(CheckpointError, match=f"format version {version!r}"):
        checkpoint.load(path)


def test_missing_metadata_or_weights(tmp_path):
    path = tmp_path / "bare.pt"
    torch.save(
        {"format": checkpoint.FORMAT, "format_version": checkpoint.FORMAT_VERSION, "meta": make_meta()}, path
    )
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


@pytest.mark.parametrize(
    "broken",
    [
        {"arch": "Transformer"},
        {"hparams": {"hidden_size": 0, "num_layers": 1}},
        {"hparams": {"hidden_size": 8, "num_layers": 1, "colour": "red"}},
    ],
)
def test_metadata_that_cannot_build_a_net(tmp_path, broken):
    meta = make_meta()
    net = make_net(meta)
    meta.update(broken)
    path = checkpoint.save(tmp_path / "bad.pt", net.state_dict(), meta)
    with pytest.raises(CheckpointError, match="metadata does not describe a usable model"):
        checkpoint.load(path)


@pytest.mark.parametrize("key", ["arch", "hparams", "seq_len", "norm", "logit_offset", "threshold"])
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
    assert checkpoint.load(path).meta == ModelMeta.from_dict(meta)


def test_save_creates_the_folder(tmp_path):
    meta = make_meta()
    net = make_net(meta)
    path = checkpoint.save(tmp_path / "a" / "b" / "m.pt", net.state_dict(), meta)
    assert path.is_file()


def test_train_state_is_kept(tmp_path):
    meta = make_meta()
    net = make_net(meta)
    opt = torch.optim.Adam(net.parameters())
    path = checkpoint.save(
        tmp_path / "s.pt",
        net.state_dict(),
        meta,
        train_state={"epoch": 3, "optimizer": opt.state_dict(), "history": []},
    )
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


# ---------------------------------------------------------------- judged before trusted


def _payload(meta: dict, state: object) -> dict:
    return {
        "format": checkpoint.FORMAT,
        "format_version": checkpoint.FORMAT_VERSION,
        "meta": meta,
        "state_dict": state,
    }


@pytest.fixture
def spy_builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The default device each time nets.build runs: shows whether a net was ever built with
    real storage (anything but "meta")."""
    devices: list[str] = []
    real = nets.build

    def build(*a, **k):
        devices.append(torch.get_default_device().type)
        return real(*a, **k)

    monkeypatch.setattr(nets, "build", build)
    return devices


@pytest.mark.parametrize(
    ("arch", "hparams", "seq_len", "bound"),
    [
        (
            "CNN",
            {"hidden_size": 10**8, "num_layers": 1},
            SEQ_LEN,
            "hparams.hidden_size 100000000 is outside 1..4096",
        ),
        (
            "LSTM",
            {"hidden_size": 10**8, "num_layers": 2},
            SEQ_LEN,
            "hparams.hidden_size 100000000 is outside",
        ),
        (
            "PureRNN",
            {"hidden_size": 8, "num_layers": 10**6},
            SEQ_LEN,
            "hparams.num_layers 1000000 is outside 1..64",
        ),
        ("CNN", {"hidden_size": 8, "num_layers": 1}, 10**9, "seq_len 1000000000 is outside 1..100000"),
        ("GRU", {"hidden_size": 8, "num_layers": 1, "dropout": 1.5}, SEQ_LEN, "hparams.dropout must be"),
        ("GRU", {"hidden_size": 8, "num_layers": 1, "dropout": float("nan")}, SEQ_LEN, "hparams.dropout"),
        ("GRU", {"hidden_size": 8, "num_layers": 1, "dropout": None}, SEQ_LEN, "hparams.dropout"),
        ("GRU", {"hidden_size": "8", "num_layers": 1}, SEQ_LEN, "hparams.hidden_size must be an integer"),
        ("GRU", {"hidden_size": True, "num_layers": 1}, SEQ_LEN, "hparams.hidden_size must be an integer"),
        ("GRU", {"hidden_size": 8.0, "num_layers": 1}, SEQ_LEN, "hparams.hidden_size must be an integer"),
        # each bound passes, the product does not: refused by the parameter count, built on `meta` only
        ("LSTM", {"hidden_size": 4096, "num_layers": 64}, SEQ_LEN, "weights, more than the 268,435,456"),
        ("CNN", {"hidden_size": 4096, "num_layers": 2}, 100_000, "weights, more than the"),
    ],
)
def test_absurd_hyper_parameters_are_refused_before_any_weight_exists(
    tmp_path, spy_builds, arch, hparams, seq_len, bound
):
    """The tester's file: well-formed, weights of a small net, metadata asking for a huge one."""
    small = make_meta(arch)
    meta = {**small, "hparams": hparams, "seq_len": seq_len}
    path = checkpoint.save(tmp_path / "huge.pt", make_net(small).state_dict(), meta)
    spy_builds.clear()
    with pytest.raises(CheckpointError, match="metadata does not describe a usable model") as e:
        checkpoint.load(path)
    assert bound in str(e.value)
    assert set(spy_builds) <= {"meta"}  # never built for real


def test_every_build_argument_is_bounded():
    """A hyper-parameter added to nets.build must get a bound here, or metadata could set it
    to anything."""
    import inspect

    params = set(inspect.signature(nets.build).parameters) - {"arch", "n_features", "seq_len"}
    assert params == set(checkpoint.INT_HPARAMS) | set(checkpoint.FLOAT_HPARAMS)


@pytest.mark.parametrize("arch", nets.ARCHS)
def test_expected_shapes_come_from_the_meta_device(arch):
    meta = make_meta(arch, hidden_size=12, num_layers=3)
    expected = checkpoint.expected_state(ModelMeta.from_dict(meta), "x.pt")
    real = make_net(meta).state_dict()
    assert list(expected) == list(real)
    assert all(t.device.type == "meta" for t in expected.values())
    assert {k: (tuple(t.shape), t.dtype) for k, t in expected.items()} == {
        k: (tuple(t.shape), t.dtype) for k, t in real.items()
    }


def _state(meta: dict) -> dict[str, torch.Tensor]:
    return dict(make_net(meta).state_dict())


def _renamed(sd: dict) -> dict:
    k = next(iter(sd))
    return {("rnn.weight_ih_l9" if n == k else n): v for n, v in sd.items()}


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda sd: {k: v for k, v in list(sd.items())[1:]}, "missing rnn.weight_ih_l0"),
        (lambda sd: {**sd, "head.extra": torch.zeros(1)}, "unexpected head.extra"),
        (_renamed, "missing rnn.weight_ih_l0; unexpected rnn.weight_ih_l9"),
        (lambda sd: {**sd, "head.weight": sd["head.weight"].tolist()}, "head.weight is a list, not a tensor"),
        (lambda sd: {**sd, "head.bias": 0.5}, "head.bias is a float, not a tensor"),
        (lambda sd: {**sd, "head.weight": sd["head.weight"].T}, "head.weight has shape (8, 1)"),
        (lambda sd: {**sd, "head.weight": torch.zeros(1, 8, dtype=torch.int32)}, "holds torch.int32"),
        (lambda sd: {**sd, "head.weight": torch.zeros(1, 8, dtype=torch.bool)}, "holds torch.bool"),
        (lambda sd: {**sd, "head.weight": torch.zeros(1, 8, dtype=torch.complex64)}, "holds torch.complex64"),
        (lambda sd: {**sd, "head.weight": torch.full((1, 8), float("nan"))}, "NaN or infinite"),
        (lambda sd: {**sd, "head.bias": torch.tensor([float("inf")])}, "NaN or infinite"),
        (lambda sd: {**sd, "head.weight": torch.zeros(1, 8).to_sparse()}, "not a plain tensor"),
    ],
)
def test_weights_are_checked_against_the_described_net(tmp_path, mutate, reason):
    meta = make_meta("GRU")
    path = tmp_path / "w.pt"
    torch.save(_payload(meta, mutate(_state(meta))), path)
    with pytest.raises(CheckpointError, match="weights do not fit the described model") as e:
        checkpoint.load(path)
    assert reason in str(e.value) and "retrain" in str(e.value)


def test_float64_weights_of_the_right_shape_still_load(tmp_path):
    """Another float width is a legitimate save (converted on load), not damage."""
    meta = make_meta("GRU")
    sd = {k: v.double() for k, v in _state(meta).items()}
    torch.save(_payload(meta, sd), tmp_path / "f64.pt")
    model = checkpoint.load(tmp_path / "f64.pt")
    assert all(p.dtype == torch.float32 for p in model.net.parameters())
    assert model.proba(np.zeros((2, SEQ_LEN, F), np.float32)).shape == (2,)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"hparams": [8, 1]}, "hparams must be a mapping"),
        ({"arch": 3}, "arch must be a name"),
        ({"seq_len": "10"}, "seq_len must be an integer"),
        ({"seq_len": 0}, "seq_len 0 is outside"),
        ({"norm": "z"}, "norm must be a mapping"),
        ({"norm": {"mean": [0.0] * F}}, "norm.std must be"),
        ({"norm": {"mean": [0.0] * (F + 1), "std": [1.0] * F}}, "norm.mean must be"),
        ({"norm": {"mean": [float("nan")] * F, "std": [1.0] * F}}, "norm.mean must be"),
        ({"norm": {"mean": [0.0] * F, "std": [0.0] * F}}, "norm.std must be positive"),
        ({"logit_offset": float("inf")}, "logit_offset must be a finite number"),
        ({"logit_offset": "0"}, "logit_offset must be a finite number"),
        ({"threshold": 1.5}, "threshold must be a probability"),
        ({"threshold": None}, "threshold must be a probability"),
    ],
)
def test_metadata_values_are_typed_and_bounded(tmp_path, change, reason):
    meta = make_meta()
    sd = _state(meta)
    meta.update(change)
    path = checkpoint.save(tmp_path / "m.pt", sd, meta)
    with pytest.raises(CheckpointError, match="metadata does not describe a usable model") as e:
        checkpoint.load(path)
    assert reason in str(e.value)


@pytest.mark.parametrize(
    "payload",
    [
        _payload(make_meta(), [1, 2, 3]),
        _payload([1], {}),
        _payload(make_meta(features=None), {}),
        _payload(make_meta(features="price"), {}),
    ],
    ids=["state-list", "meta-list", "features-none", "features-str"],
)
def test_payloads_of_the_wrong_structure(tmp_path, payload):
    torch.save(payload, tmp_path / "s.pt")
    with pytest.raises(CheckpointError):
        checkpoint.load(tmp_path / "s.pt")


def test_unknown_extra_metadata_is_kept(tmp_path):
    """Other parts of tickcast add keys (a job id...): they are not the loader's business."""
    path, _, meta = saved(tmp_path, job_id="j-123", anything={"nested": [1, 2]})
    loaded = checkpoint.load(path).meta
    assert loaded.job_id == "j-123" and loaded.extra == {"anything": {"nested": [1, 2]}}


def test_a_stray_file_is_told_apart_from_a_damaged_model(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"hello")
    torch.save({"a": 1}, tmp_path / "other.pt")
    path, _, _ = saved(tmp_path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(checkpoint.NotACheckpoint):
        checkpoint.read(tmp_path / "junk.pt")
    with pytest.raises(checkpoint.NotACheckpoint):
        checkpoint.read(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="truncated") as e:
        checkpoint.read(path)
    assert not isinstance(e.value, checkpoint.NotACheckpoint)


def test_a_huge_tensor_is_judged_without_reading_it_into_memory(tmp_path):
    """A 256 MiB weight where a 32-byte one belongs: refused by its shape with the file mapped,
    not read (loading it would grow the process by the 256 MiB). Measured in a fresh process,
    whose peak memory says what the load cost."""
    import subprocess
    import sys

    meta = make_meta("GRU")
    sd = _state(meta)
    sd["head.weight"] = torch.empty(2**26)  # untouched pages: not resident here either
    path = tmp_path / "big.pt"
    torch.save(_payload(meta, sd), path)
    del sd
    code = (
        "import resource, sys\n"
        "from app.ml import checkpoint\n"
        "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "before = peak()\n"
        "try:\n"
        "    checkpoint.load(sys.argv[1])\n"
        "except checkpoint.CheckpointError as e:\n"
        "    print(e)\n"
        "print(peak() - before)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    reason, grew_kib = out.strip().splitlines()
    assert "head.weight has shape (67108864,), the model needs (1, 8)" in reason
    assert int(grew_kib) < 64 * 1024  # far below the 256 MiB a full read costs


# ---------------------------------------------------------------- metadata versions

# What fit() and checkpoint.save wrote before the metadata carried a version (1), literally.
V1_META = {
    "id": "gru-20250101-000000-abcdef",
    "arch": "GRU",
    "hparams": {"hidden_size": 8, "num_layers": 1, "dropout": 0.3},
    "seq_len": 10,
    "horizon": 1,
    "features": ["log_return", "log_amount", "log_gap", "up", "down", "flat"],
    "norm": {"mean": [0.0, -1.5, 0.2, 0.3, 0.3, 0.4], "std": [1e-4, 1.2, 0.9, 0.46, 0.46, 0.49]},
    "logit_offset": -0.7113,
    "threshold": 0.3293,
    "train": {
        "arch": "GRU",
        "seq_len": 10,
        "horizon": 1,
        "hidden_size": 8,
        "num_layers": 1,
        "dropout": 0.3,
        "batch_size": 256,
        "num_epochs": 3,
        "optimizer": "adam",
        "lr": 0.002,
        "weight_decay": 0.0,
        "momentum": 0.9,
        "step_size": 3,
        "gamma": 0.5,
        "clip": 1.0,
        "patience": 3,
        "monitor": "auc",
        "train_split": 0.6,
        "val_split": 0.2,
        "seed": 0,
        "device": "auto",
        "num_threads": 1,
        "save_every": 0,
        "eval_batch_size": 4096,
        "progress_every": 5,
    },  # fmt: skip
    "data": {
        "source": "store",
        "exchange": "synthetic",
        "symbol": "BTC-USD",
        "start": None,
        "end": None,
        "start_time": 1534131395.0,
        "end_time": 1534135395.0,
        "n_ticks": 4000,
        "split": {"train": [0, 2381], "val": [2382, 3174], "test": [3175, 3967]},
    },  # fmt: skip
    "created_at": "2025-01-01T00:00:00+00:00",
    "versions": {"tickcast": "0.1.0", "torch": "2.5.1", "python": "3.11.7"},
    "metrics": {"val": {"auc": 0.55, "brier": 0.21, "n": 792.0}, "test": {"auc": 0.54, "n": 792.0}},
    "best_epoch": 2,
    "epochs": 3,
    "train_seconds": 12.5,
    "job_id": "3f9c2a7d41b0",
}


def _v1_file(path: Path, meta: dict, net: torch.nn.Module) -> Path:
    torch.save(
        {"format": "tickcast.checkpoint", "format_version": 1, "meta": meta, "state_dict": net.state_dict()},
        path,
    )
    return path


def test_a_file_written_before_the_metadata_had_a_version_loads(tmp_path):
    net = nets.build("GRU", n_features=F_LEGACY, seq_len=10, hidden_size=8, num_layers=1, dropout=0.3)
    model = checkpoint.load(_v1_file(tmp_path / "old.pt", V1_META, net))
    m = model.meta
    assert m.meta_version == 1 and m.id == model.id == "gru-20250101-000000-abcdef"
    assert (m.arch, m.seq_len, m.horizon, m.hparams) == ("GRU", 10, 1, V1_META["hparams"])
    assert (m.job_id, m.best_epoch, m.epochs, m.train_seconds) == ("3f9c2a7d41b0", 2, 3, 12.5)
    assert m.metrics["val"]["auc"] == 0.55 and m.data["n_ticks"] == 4000 and m.extra == {}
    assert m.train is not None and TrainConfig.from_dict(m.train).arch == "GRU"
    # nothing lost; what is added is the typed defaults of keys later versions have
    assert {k: v for k, v in m.to_dict().items() if k != "meta_version"} == V1_META | {
        "target": "tick",
        "baselines": {},
    }
    assert (m.calibrator, m.threshold_rule) == (None, None)
    assert model.spec.names == features.LEGACY_FEATURES and model.spec.target == "tick"
    assert 0 < model.predict(synthetic_ticks(40)) < 1


def synthetic_ticks(n: int):
    from app.market.sources import synthetic

    return synthetic.generate(n, seed=9)


def test_an_early_file_without_the_descriptive_keys_loads(tmp_path):
    """The oldest files say only what rebuilds the net; a size left out of hparams meant
    nets.build's default of the time (hidden 64, 4 layers)."""
    keep = ("arch", "hparams", "seq_len", "features", "norm", "logit_offset", "threshold")
    meta = {k: V1_META[k] for k in keep} | {"arch": "CNN", "hparams": {}}
    net = nets.build("CNN", n_features=F_LEGACY, seq_len=10, hidden_size=64, num_layers=4)
    model = checkpoint.load(_v1_file(tmp_path / "cnn-early.pt", meta, net))
    m = model.meta
    assert model.id == "cnn-early" and m.id is None and m.horizon == 1
    assert m.hparams == {"hidden_size": 64, "num_layers": 4}
    assert (m.train, m.data, m.metrics, m.created_at, m.versions, m.job_id) == (
        None,
        {},
        {},
        None,
        None,
        None,
    )


def test_new_files_record_their_metadata_version(tmp_path):
    meta = ModelMeta.from_dict({**V1_META, "meta_version": META_VERSION})
    net = nets.build("GRU", n_features=F_LEGACY, seq_len=10, hidden_size=8, num_layers=1, dropout=0.3)
    path = checkpoint.save(tmp_path / "new.pt", net.state_dict(), meta)
    written = torch.load(path, weights_only=True)["meta"]
    assert written["meta_version"] == META_VERSION == 3
    assert ModelMeta.from_dict(written) == meta == checkpoint.load(path).meta


def test_a_newer_metadata_version_is_refused_with_what_to_do(tmp_path):
    net = nets.build("GRU", n_features=F_LEGACY, seq_len=10, hidden_size=8, num_layers=1, dropout=0.3)
    path = _v1_file(tmp_path / "future.pt", {**V1_META, "meta_version": META_VERSION + 1}, net)
    words = f"has metadata version {META_VERSION + 1}; this tickcast reads versions 1 to {META_VERSION}"
    with pytest.raises(CheckpointError, match=words):
        checkpoint.load(path)
