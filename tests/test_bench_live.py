"""scripts/bench_live.py: live scoring throughput, outcome delay and /predict beside it, as one JSON line.

Timings are never asserted (a shared machine makes them noise): the run must finish,
carry every figure, and the figures must agree with each other.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from app.market.sources import synthetic
from app.ml import checkpoint, features, training
from app.ml.config import TrainConfig
from app.services.live import scorer
from app.services.registry import Registry

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "bench_live.py"
_spec = importlib.util.spec_from_file_location("tickcast_bench_live", SCRIPT)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench  # the importlib recipe: its dataclasses look their module up
_spec.loader.exec_module(bench)

KEYS = {
    "model",
    "shadows",
    "threads",
    "pinned",
    "poll_s",
    "backlog_ticks",
    "throughput_per_model_tps",
    "throughput_default_tps",
    "throughput_all_tps",
    "predictions_per_s_all",
    "time_share",
    "bytes_per_million_predictions",
    "delay_by_rate",
    "delay_rate",
    "delay_p50_s",
    "delay_p99_s",
    "max_rate_kept_up",
    "predict_p50_idle_ms",
    "predict_p99_idle_ms",
    "predict_p50_live_ms",
    "predict_p99_live_ms",
    "predict_p99_ratio",
    "live_feed_tps",
    "live_delay_p99_s",
    "predict_errors",
    "targets",
}
RATE_KEYS = {"rate", "achieved_tps", "outcomes", "p50_s", "p99_s", "max_s", "catch_up_s", "kept_up"}


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")
def test_quick_run_prints_every_figure_as_one_json_line(tmp_path: Path) -> None:
    models = tmp_path / "models"
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--no-pin", "--json", "--models", str(models)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    res = json.loads(lines[-1])
    assert KEYS <= set(res)

    # the active model and three shadows, trained into --models and kept there
    assert len(res["shadows"]) == 3 and res["model"] not in res["shadows"]
    assert Registry(models).active_id() == res["model"]
    assert set(res["throughput_per_model_tps"]) == {res["model"], *res["shadows"]}
    assert res["threads"] == 1 and res["pinned"] is False and res["poll_s"] == 0.2

    # throughput: every figure positive, the default model's is its own entry
    assert res["backlog_ticks"] == 3_000
    assert res["throughput_default_tps"] == res["throughput_per_model_tps"][res["model"]]
    assert all(v > 0 for v in res["throughput_per_model_tps"].values())
    # all four score each tick: four predictions per tick, give or take windows across a gap
    assert 3 * res["throughput_all_tps"] <= res["predictions_per_s_all"] <= 4 * res["throughput_all_tps"]
    shares = res["time_share"]
    assert set(shares) == {"features", "forward", "store_read", "log_write", "other"}
    assert all(v >= 0 for v in shares.values()) and math.isclose(sum(shares.values()), 1.0, abs_tol=0.01)
    assert all(shares[k] > 0 for k in ("features", "forward", "store_read", "log_write"))
    assert res["bytes_per_million_predictions"] > 0

    # the delay, per rate asked, from predictions whose outcomes were recorded
    assert [r["rate"] for r in res["delay_by_rate"]] == [200.0, 1000.0]
    for r in res["delay_by_rate"]:
        assert set(r) == RATE_KEYS
        assert r["outcomes"] > 0 and r["achieved_tps"] > 0
        assert 0 < r["p50_s"] <= r["p99_s"] <= r["max_s"]
    at = res["delay_by_rate"][1]
    assert res["delay_rate"] == 1000.0 and (res["delay_p50_s"], res["delay_p99_s"]) == (
        at["p50_s"],
        at["p99_s"],
    )
    highest = None
    for r in res["delay_by_rate"]:  # rising: the last rate before the first one it fell behind at
        if not r["kept_up"]:
            break
        highest = r["rate"]
    assert res["max_rate_kept_up"] == highest

    # /predict idle and while live scoring ran: the ratio is theirs, nothing failed
    assert res["predict_errors"] == 0 and res["live_feed_tps"] > 0 and res["live_delay_p99_s"] > 0
    assert 0 < res["predict_p50_idle_ms"] <= res["predict_p99_idle_ms"]
    assert 0 < res["predict_p50_live_ms"] <= res["predict_p99_live_ms"]
    assert res["predict_p99_ratio"] == pytest.approx(
        res["predict_p99_live_ms"] / res["predict_p99_idle_ms"], rel=0.01
    )

    # the verdicts agree with their figures, and the readable lines show them
    targets = res["targets"]
    assert set(targets) == {"throughput_default_tps", "predict_p99_ratio"}
    tps, ratio = targets["throughput_default_tps"], targets["predict_p99_ratio"]
    assert tps["value"] == res["throughput_default_tps"] and tps["met"] == (tps["value"] >= 20_000)
    assert ratio["value"] == res["predict_p99_ratio"] and ratio["met"] == (ratio["value"] <= 1.5)
    text = "\n".join(lines[:-1])
    assert "highest rate kept up with" in text
    assert any(
        line.strip().startswith(("[ok] predict_p99_ratio", "[MISS] predict_p99_ratio")) for line in lines
    )


def test_scoring_a_backlog_logs_every_tick_and_leaves_no_wrapper_behind(tmp_path: Path) -> None:
    """The phase timing wraps the calls a step makes; after the run the classes are as they were."""
    tiny = TrainConfig(arch="CNN", hidden_size=8, seq_len=16, num_epochs=1, num_threads=1, device="cpu")
    threads = torch.get_num_threads()
    try:  # fit sets torch's thread count for the whole process: put it back
        src = training.fit(synthetic.generate(2_500, seed=5), tiny).save(tmp_path / "models")
    finally:
        torch.set_num_threads(threads)
    model = Registry(tmp_path / "models").load(src.stem)
    logits, windows = checkpoint.Model.logits, features.WindowSpec.windows_ending_at
    ticks = synthetic.generate(2_000, seed=11)
    run = bench.score_backlog(tmp_path / "backlog.db", ticks, [scorer.Entrant(model, "active")])
    assert checkpoint.Model.logits is logits and features.WindowSpec.windows_ending_at is windows
    assert run.ticks == 2_000
    # every tick with a full window clear of gaps is scored; the first min_ticks - 1 have none
    assert 0 < run.predictions <= 2_000 - (model.spec.min_ticks - 1)
    assert run.seconds > 0 and run.growth_bytes > 0
    assert {"features", "forward", "store_read", "log_write", "other"} == set(run.phases)
    assert all(v > 0 for k, v in run.phases.items() if k != "other")
    # each call is charged once: the parts add up to no more than the run
    assert sum(run.phases.values()) == pytest.approx(run.seconds)
