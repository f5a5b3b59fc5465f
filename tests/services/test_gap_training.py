"""A gap splits windows: a job on a stored market trains on the stretches between its gaps (time
gaps over gap_s, missing trade ids), reports how many windows the cuts cost, and no training
window spans a gap."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from app.market.sources import synthetic
from app.market.store import TickStore
from app.market.ticks import TickArrays
from app.ml import features, rows, training
from app.ml.config import TrainConfig
from app.ml.enough import MIN_WINDOWS
from app.services.coverage import TooFewAfterGaps, split_for_training, windows_in
from app.services.jobs import worker as job_worker
from app.services.jobs.manager import JobManager, JobSpec
from app.services.jobs.spec import validate_spec
from app.services.registry import Registry
from tests.helpers.jobs import SMALL, finished, wait

CFG = TrainConfig.from_dict(SMALL)
HOUR = 3600.0


def gapped(n: int = 3000, at: int = 1500, seed: int = 4) -> TickArrays:
    """Synthetic trades (consecutive ids, no step near 300 s) with an hour without trades
    before tick `at`."""
    t = synthetic.generate(n, seed=seed)
    time = t.time.copy()
    time[at:] += HOUR
    return TickArrays(time, t.price, t.amount, t.trade_id)


def cut(ticks: TickArrays, keep: np.ndarray) -> TickArrays:
    """The ticks at `keep` only (trades the store never got)."""
    return TickArrays(ticks.time[keep], ticks.price[keep], ticks.amount[keep], ticks.trade_id[keep])


def spans(data: features.WindowedData, series: list[TickArrays], before: float, after: float) -> int:
    """How many windows of `data` (train, validation and test) read ticks from both sides of the
    gap between times `before` and `after`: their history, their rows or their target.

    Row r of a series describes its tick r + 1 (the move into it), and the series' rows lie back
    to back, so each row has the time of the tick it describes."""
    row_time = np.concatenate([s.time[1:] for s in series])
    idx = np.concatenate([p for p in (data.split.train, data.split.val, data.split.test) if p is not None])
    first = row_time[idx - rows.lookback(data.names)]
    target = row_time[idx + data.seq_len - 1 + data.horizon]
    return int(np.count_nonzero((first <= before) & (target >= after)))


def test_no_training_window_spans_the_gap() -> None:
    ticks = gapped()
    split = split_for_training(ticks, CFG, 300)
    assert split.gaps == 1 and [len(s) for s in split.series] == [1500, 1500]
    before, after = float(ticks.time[1499]), float(ticks.time[1500])

    def windows(series: list[TickArrays]) -> features.WindowedData:
        return features.build_dataset(
            series,
            CFG.seq_len,
            horizon=CFG.horizon,
            train=CFG.train_split,
            val=CFG.val_split,
            names=CFG.feature_names(),
            target=CFG.target,
        )

    assert spans(windows(split.series), split.series, before, after) == 0
    whole = [TickArrays(ticks.time, ticks.price, ticks.amount)]
    assert spans(windows(whole), whole, before, after) > 0  # uncut, some windows would
    assert windows(split.series).n_windows == split.kept == split.windows - split.windows_removed


def test_missing_trade_ids_cut_too_and_pieces_too_short_are_dropped() -> None:
    ticks = gapped(n=3200, at=3100)  # a time gap 100 ticks before the end
    keep = np.ones(len(ticks), dtype=bool)
    keep[1500:1503] = False  # trades 1500..1502 never stored
    split = split_for_training(cut(ticks, keep), CFG, 300)
    assert split.gaps == 2 and split.dropped == 0
    assert [len(s) for s in split.series] == [1500, 1597, 100]
    # every cut costs the windows that would have crossed it: one min_ticks - 1 + horizon each
    per_cut = CFG.seq_len + rows.lookback(CFG.feature_names()) + CFG.horizon
    assert split.windows_removed == 2 * per_cut
    # a piece of 30 ticks has no window to spare for validation: left out, its windows lost too
    short = split_for_training(gapped(n=3030, at=3000), CFG, 300)
    assert [len(s) for s in short.series] == [3000] and short.dropped == 1
    assert short.windows_removed == windows_in(gapped(n=3030, at=3000), CFG) - windows_in(
        short.series[0], CFG
    )
    # the series keep only what fit() reads
    assert all(s.trade_id is None for s in split.series)


def test_generated_ticks_and_ticks_without_gaps_are_not_cut() -> None:
    ticks = synthetic.generate(3000, seed=1)
    split = split_for_training(ticks, CFG, 300)
    assert split.gaps == 0 and split.windows_removed == 0 and [len(s) for s in split.series] == [3000]
    assert split_for_training(gapped(), CFG, 2 * HOUR).gaps == 0  # the hour is under this gap_s


def test_too_few_windows_between_the_gaps_is_refused_with_the_count() -> None:
    n = MIN_WINDOWS + 200
    time = np.arange(n, dtype=float) + (np.arange(n) // 100) * HOUR  # an hour's gap every 100 ticks
    t = synthetic.generate(n, seed=2)
    with pytest.raises(TooFewAfterGaps, match=r"has 1,200 ticks, but 11 gaps .* into 12 pieces with 804 "):
        split_for_training(
            TickArrays(time, t.price, t.amount), CFG, 300, what="bitstamp:BTC-USD", todo="more"
        )


def test_a_job_on_a_market_with_a_gap_reports_it_and_the_windows_it_removed(parts) -> None:
    store, registry = parts
    store.insert("bitstamp", "BTC-USD", gapped())

    async def main() -> None:
        m = JobManager(store, registry, gap_s=300)
        await m.start()
        rec = await wait(m, m.submit(JobSpec("bitstamp", "BTC-USD", None, None, dict(SMALL))).id, finished)
        await m.stop()
        assert rec.status == "succeeded", rec.error
        r = rec.result
        model = registry.load(r["model_id"])
        # what the model's own window spec says one cut costs: a window per tick it needs
        # before its prediction, and the horizon after it
        assert r["gaps"] == 1
        assert r["gap_windows_removed"] == model.spec.min_ticks - 1 + model.meta.horizon
        data = model.meta.data
        assert (data["gaps"], data["gap_windows_removed"], data["gap_s"]) == (
            1,
            r["gap_windows_removed"],
            300,
        )
        assert data["n_series"] == 2 and data["n_ticks"] == 3000
        # each series split in time order on its own: the split the two halves give, not the whole's
        per_half = windows_in(gapped()[:1500], CFG)
        tr, va, te = features.chronological_split(per_half, CFG.train_split, CFG.val_split, CFG.horizon)
        assert te  # the defaults keep a test part
        want = {"train": 2 * (tr[1] - tr[0]), "val": 2 * (va[1] - va[0]), "test": 2 * (te[1] - te[0])}
        assert {k: data["split"][k] for k in want} == want

    asyncio.run(main())


def test_the_worker_refuses_a_market_whose_gaps_leave_too_few_windows(parts) -> None:
    store, registry = parts
    n = MIN_WINDOWS + 300
    t = synthetic.generate(n, seed=3)
    time = t.time + (np.arange(n) // 100) * HOUR
    store.insert("bitstamp", "BTC-USD", TickArrays(time, t.price, t.amount, t.trade_id))
    sent: list[tuple[str, object]] = []

    class Q:
        def put(self, item: tuple[str, object]) -> None:
            sent.append(item)

    spec = validate_spec(JobSpec("bitstamp", "BTC-USD", None, None, dict(SMALL)))
    with pytest.raises(TooFewAfterGaps, match=r"bitstamp:BTC-USD has 1,300 ticks, but 12 gaps.*: pull ticks"):
        job_worker._train(spec, store.path, str(registry.folder), 1, Q(), lambda: False, gap_s=300)
    assert not list(registry.folder.glob("*.pt"))
    # with gaps that long allowed, the same ticks train
    assert split_for_training(store.read("bitstamp", "BTC-USD"), CFG, 2 * HOUR).gaps == 0


def test_gap_s_must_be_positive(parts: tuple[TickStore, Registry]) -> None:
    store, registry = parts
    with pytest.raises(ValueError, match="gap_s must be a positive number"):
        JobManager(store, registry, gap_s=0)


def test_an_active_model_with_longer_windows_than_the_stretches_is_noted_not_fatal(parts) -> None:
    """The new model is compared with the active one on the same windows; where the active one
    reads longer windows than any stretch between the gaps holds, it cannot be scored there."""
    store, registry = parts
    long = training.fit(synthetic.generate(1400, seed=8), TrainConfig.from_dict({**SMALL, "seq_len": 200}))
    long.save(registry.folder)
    registry.activate(long.model.id)
    n = 1400  # an hour's gap every 200 ticks: 7 stretches of 167 windows for seq_len 16, none for 200
    t = synthetic.generate(n, seed=9)
    store.insert("bitstamp", "BTC-USD", TickArrays(t.time + (np.arange(n) // 200) * HOUR, t.price, t.amount))
    spec = validate_spec(JobSpec("bitstamp", "BTC-USD", None, None, dict(SMALL)))
    r = job_worker._train(spec, store.path, str(registry.folder), 1, _Sink(), lambda: False, gap_s=300)
    assert (r["gaps"], r["gap_windows_removed"]) == (6, 6 * 33)
    assert r["incumbent_id"] == long.model.id and r["incumbent_val_auc"] is None
    assert "reads longer windows than the stretches between gaps hold" in r["incumbent_note"]
    assert r["challenger_val_auc"] == pytest.approx(r["metrics"]["val"]["auc"])


class _Sink:
    def put(self, item: object) -> None:
        pass
