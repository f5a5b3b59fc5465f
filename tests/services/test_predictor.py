"""The predictor: same numbers as the model, micro-batching, activation under load."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from app.market.sources import synthetic
from app.market.ticks import TickArrays, TickError
from app.ml import checkpoint, training
from app.services.predictor import NoModel, NotEnoughTicks, Prediction, Predictor, Remedy
from app.services.registry import InvalidModelId, Registry, UnknownModel, UnloadableModel


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TickArrays, str, str]:
    """Two tiny trained CNNs (L=32 and L=16) in a folder, and the ticks they were trained on."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("models")
    ticks = synthetic.generate(3000)
    ids = []
    for seq_len, seed in ((32, 0), (16, 1)):
        cfg = training.TrainConfig(
            hidden_size=8, num_layers=1, num_epochs=1, seq_len=seq_len, seed=seed, device="cpu"
        )
        res = training.fit(ticks, cfg)
        res.save(folder)
        ids.append(res.model.id)
    torch.set_num_threads(before)
    return folder, ticks, ids[0], ids[1]


@pytest.fixture
def setup(trained, tmp_path: Path):
    src, ticks, a, b = trained
    folder = tmp_path / "models"
    shutil.copytree(src, folder)
    reg = Registry(folder)
    reg.activate(a)
    return reg, ticks, a, b


def make(reg: Registry, **kw) -> Predictor:
    p = Predictor(reg, "cpu", threads=1, **kw)
    p.load_active()
    return p


def windows_of(ticks: TickArrays, n: int, size: int = 100) -> list[TickArrays]:
    return [ticks[i * 7 : i * 7 + size] for i in range(n)]


def test_predict_each_answers_what_predict_would_for_each_prefix(setup) -> None:
    reg, ticks, a, _ = setup
    pred = make(reg, max_batch=8)

    async def go() -> tuple[list[Prediction], list[Prediction], list[Prediction]]:
        try:
            each = await pred.predict_each(ticks[:300], 250)
            singles = [await pred.predict(ticks[: i + 1]) for i in range(250, 300)]
            early = await pred.predict_each(ticks[:60], 0)  # from the first full window on
            return each, singles, early
        finally:
            await pred.stop()

    each, singles, early = asyncio.run(go())
    assert len(each) == 50 and pred.stats.batches >= 7  # in passes of at most 8
    for e, s in zip(each, singles, strict=True):
        assert e.as_of == s.as_of and e.model_id == s.model_id == a
        assert e.probability == pytest.approx(s.probability, abs=1e-6)
    assert [p.as_of for p in early] == ticks.time[48:60].tolist()  # model a: L=32, 16 of history


def test_matches_model_predict(setup) -> None:
    reg, ticks, a, _ = setup
    pred = make(reg)
    model = checkpoint.load(reg.path(a), "cpu")
    w = ticks[500:600]

    async def go() -> Prediction:
        try:
            return await pred.predict(w)
        finally:
            await pred.stop()

    r = asyncio.run(go())
    assert r.model_id == a and r.as_of == float(w.time[-1])
    assert r.probability == pytest.approx(model.predict(w), abs=1e-6)
    assert r.threshold == model.threshold and r.decision == (r.probability >= model.threshold)


def test_concurrent_requests_are_batched(setup) -> None:
    reg, ticks, a, _ = setup
    sizes: list[int] = []
    pred = make(reg, window_ms=5.0, max_batch=64, on_batch=sizes.append)
    model = checkpoint.load(reg.path(a), "cpu")
    ws = windows_of(ticks, 50)

    async def go() -> list[Prediction]:
        await pred.start()
        try:
            return await asyncio.gather(*(pred.predict(w) for w in ws))
        finally:
            await pred.stop()

    out = asyncio.run(go())
    assert len(out) == 50 and sum(sizes) == 50 and len(sizes) < 50
    assert pred.stats.predictions == 50 and pred.stats.requests == 50
    assert pred.stats.batches == len(sizes) and sum(pred.stats.batch_sizes.values()) == len(sizes)
    expect = [model.predict(w) for w in ws]
    assert [r.probability for r in out] == pytest.approx(expect, abs=1e-6)


def test_max_batch_caps_a_pass(setup) -> None:
    reg, ticks, _, _ = setup
    sizes: list[int] = []
    pred = make(reg, window_ms=50.0, max_batch=8, on_batch=sizes.append)

    async def go() -> None:
        t0 = time.perf_counter()
        await asyncio.gather(*(pred.predict(w) for w in windows_of(ticks, 16)))
        assert time.perf_counter() - t0 < 1.0  # full batches do not wait out the window
        await pred.stop()

    asyncio.run(go())
    assert max(sizes) <= 8 and sum(sizes) == 16


@pytest.mark.parametrize("window_ms", [0.0, 2.0])
def test_lone_request_completes(setup, window_ms: float) -> None:
    reg, ticks, _, _ = setup
    pred = make(reg, window_ms=window_ms)

    async def go() -> float:
        await pred.predict(ticks[:100])  # warm up
        t0 = time.perf_counter()
        await asyncio.wait_for(pred.predict(ticks[100:200]), timeout=2.0)
        dt = time.perf_counter() - t0
        await pred.stop()
        return dt

    assert asyncio.run(go()) < 1.0


def test_predict_many(setup) -> None:
    reg, ticks, a, _ = setup
    pred = make(reg, max_batch=16)
    model = checkpoint.load(reg.path(a), "cpu")
    ws = windows_of(ticks, 40)

    async def go() -> list[Prediction]:
        try:
            return await pred.predict_many(ws)
        finally:
            await pred.stop()

    out = asyncio.run(go())
    assert [r.probability for r in out] == pytest.approx([model.predict(w) for w in ws], abs=1e-6)
    assert [r.as_of for r in out] == [float(w.time[-1]) for w in ws]
    assert pred.stats.requests == 1 and pred.stats.predictions == 40
    assert asyncio.run(pred.predict_many([])) == []


def test_activation_during_storm(setup) -> None:
    reg, ticks, a, b = setup
    pred = make(reg, window_ms=1.0)
    ws = windows_of(ticks, 20)
    failures: list[BaseException] = []
    seen: set[str] = set()

    async def client(i: int) -> None:
        for j in range(15):
            try:
                r = await pred.predict(ws[(i + j) % len(ws)])
                seen.add(r.model_id)
                assert r.model_id in (a, b) and 0.0 < r.probability < 1.0
            except BaseException as e:
                failures.append(e)

    async def flipper() -> None:
        for k in range(6):
            await asyncio.sleep(0.005)
            target = b if k % 2 == 0 else a
            if k % 3 == 0:
                pred.activate(target)  # inline, between batches
            else:
                await asyncio.to_thread(pred.activate, target)  # as the API will call it

    async def go() -> None:
        await pred.start()
        await asyncio.gather(*(client(i) for i in range(20)), flipper())
        await pred.stop()

    asyncio.run(go())
    assert failures == []
    assert seen <= {a, b} and len(seen) == 2
    assert reg.active_id() == a and pred.model is not None and pred.model.id == a


def test_not_enough_ticks_is_per_model(setup) -> None:
    reg, ticks, a, b = setup
    pred = make(reg)

    async def go() -> None:
        with pytest.raises(NotEnoughTicks, match="49"):  # L=32, + 1, + 16 of history
            await pred.predict(ticks[:48])
        r = await pred.predict(ticks[:33], model_id=b)  # L=16 needs only 33
        assert r.model_id == b
        with pytest.raises(NotEnoughTicks, match="window 1"):
            await pred.predict_many([ticks[:60], ticks[:10]])
        await pred.stop()

    asyncio.run(go())


def test_bad_ticks_raise_tick_error(setup) -> None:
    reg, ticks, _, _ = setup
    pred = make(reg)
    w = ticks[:50]
    price = w.price.copy()
    price[7] = -1.0
    bad = TickArrays(w.time, price, w.amount)
    with pytest.raises(TickError) as e:
        asyncio.run(pred.predict(bad))
    assert e.value.row == 7
    assert pred.stats.predictions == 0


def test_explicit_model_id(setup) -> None:
    reg, ticks, a, b = setup
    pred = make(reg, cache_size=1)
    model_b = checkpoint.load(reg.path(b), "cpu")
    w = ticks[1000:1100]

    async def go() -> None:
        r = await pred.predict(w, model_id=b)
        assert r.model_id == b and r.probability == pytest.approx(model_b.predict(w), abs=1e-6)
        assert (await pred.predict(w, model_id=a)).model_id == a  # the active one, no load
        assert (await pred.predict(w)).model_id == a
        with pytest.raises(UnknownModel):
            await pred.predict(w, model_id="nope")
        with pytest.raises(InvalidModelId):
            await pred.predict(w, model_id="../etc/passwd")
        await pred.stop()

    asyncio.run(go())
    assert reg.active_id() == a and list(pred._cache) == [b]


def test_no_model(tmp_path: Path, setup) -> None:
    reg = Registry(tmp_path / "empty")
    pred = Predictor(reg, "cpu")
    assert pred.load_active() is None and pred.model is None
    with pytest.raises(NoModel, match="training"):
        asyncio.run(pred.predict(setup[1][:100]))


def test_corrupt_active_model_is_reported_not_raised(setup) -> None:
    reg, ticks, a, _ = setup
    reg.path(a).write_bytes(b"garbage")
    pred = Predictor(reg, "cpu")
    assert pred.load_active() is None and pred.load_error and a in pred.load_error
    with pytest.raises(NoModel):
        asyncio.run(pred.predict(ticks[:100]))


def test_failed_activation_changes_nothing(setup) -> None:
    reg, _, a, b = setup
    pred = make(reg)
    reg.path(b).write_bytes(b"garbage")
    with pytest.raises(checkpoint.CheckpointError):
        pred.activate(b)
    assert reg.active_id() == a and pred.model is not None and pred.model.id == a


def test_stop_finishes_queued_requests(setup) -> None:
    reg, ticks, _, _ = setup
    pred = make(reg, window_ms=50.0)

    async def go() -> list[Prediction]:
        tasks = [asyncio.create_task(pred.predict(w)) for w in windows_of(ticks, 5)]
        await asyncio.sleep(0)  # queued, waiting out the window
        await pred.stop()
        return await asyncio.gather(*tasks)

    assert len(asyncio.run(go())) == 5
    assert np.isfinite([pred.stats.predictions]).all()


@pytest.mark.parametrize("adaptive", [True, False])
def test_window_policy(setup, adaptive: bool) -> None:
    """Non-adaptive: a lone request waits out the window. Adaptive: after lone requests it
    does not wait, yet a burst is still one pass."""
    reg, ticks, _, _ = setup
    sizes: list[int] = []
    pred = make(reg, window_ms=30.0, adaptive=adaptive, on_batch=sizes.append)

    async def go() -> float:
        await pred.predict(ticks[:100])
        t0 = time.perf_counter()
        await pred.predict(ticks[100:200])
        dt = time.perf_counter() - t0
        await asyncio.gather(*(pred.predict(w) for w in windows_of(ticks, 20)))
        await pred.stop()
        return dt

    dt = asyncio.run(go())
    assert (dt >= 0.02) if not adaptive else (dt < 1.0)
    assert sizes == [1, 1, 20]


@pytest.mark.parametrize(
    ("col", "i", "value"),
    [
        ("price", 3, 0.0),
        ("price", 5, float("nan")),
        ("price", 9, float("inf")),
        ("amount", 2, -1.0),
        ("amount", 4, float("nan")),
        ("time", 6, float("inf")),
        ("time", 8, 0.0),
    ],
)
def test_every_bad_tick_is_caught(setup, col: str, i: int, value: float) -> None:
    reg, ticks, _, b = setup
    pred = make(reg)
    w = ticks[:40]
    cols = {"time": w.time.copy(), "price": w.price.copy(), "amount": w.amount.copy()}
    cols[col][i] = value
    with pytest.raises(TickError) as e:
        asyncio.run(pred.predict(TickArrays(**cols), model_id=b))
    assert e.value.row == i


def _make_absurd(reg: Registry, model_id: str) -> None:
    """The tester's file: a well-formed checkpoint whose metadata asks for hidden_size 10**8."""
    payload = torch.load(reg.path(model_id), weights_only=True)
    meta = {**payload["meta"], "hparams": {**payload["meta"]["hparams"], "hidden_size": 10**8}}
    checkpoint.save(reg.path(model_id), payload["state_dict"], meta)


def test_an_absurd_active_model_leaves_no_model_and_says_why(setup) -> None:
    reg, ticks, a, b = setup
    _make_absurd(reg, a)
    pred = Predictor(reg, "cpu")
    assert pred.load_active() is None and pred.model is None
    for text in (a, "hidden_size 100000000 is outside 1..4096"):
        assert text in (pred.load_error or "")
    # what to do: another model (the HTTP answer names its routes: tests/api/test_error_answers.py)
    assert pred.no_model_reason().remedy == Remedy.ACTIVATE_ANOTHER
    with pytest.raises(NoModel) as e:
        asyncio.run(pred.predict(ticks[:100]))
    assert str(e.value).startswith("no model is loaded: the active model") and a in str(e.value)
    assert pred.activate(b).id == b and pred.load_error is None
    assert reg.active_id() == b


def test_an_absurd_model_by_id_is_refused_and_the_active_one_serves_on(setup) -> None:
    reg, ticks, a, b = setup
    pred = make(reg)
    _make_absurd(reg, b)
    w = ticks[1000:1100]

    async def go() -> None:
        with pytest.raises(UnloadableModel, match="hidden_size 100000000"):
            await pred.predict(w, model_id=b)
        with pytest.raises(UnloadableModel):
            await pred.seq_len(b)
        assert (await pred.predict(w)).model_id == a
        await pred.stop()

    asyncio.run(go())
    with pytest.raises(UnloadableModel, match="hidden_size 100000000"):
        pred.activate(b)
    assert reg.active_id() == a and pred.model is not None and pred.model.id == a
    assert list(pred._cache) == []
