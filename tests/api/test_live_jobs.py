"""A job trained with activation if_better_live: not activated, scored in shadow on live ticks,
and promoted by the paired live test alone, even with TICKCAST_PROMOTION off."""

from __future__ import annotations

from pathlib import Path

from app.services.live.promotion import Policy, decide
from tests.helpers.jobs_api import seed_store, wait
from tests.helpers.live import (
    BAD_CALIBRATOR,
    MARKET_PATH,
    app,
    craft,
    exchange,
    live,
    moves,
    serving,
    step,
    trades,
)

TINY = {"arch": "CNN", "hidden_size": 8, "num_layers": 1, "num_epochs": 1, "batch_size": 256, "seq_len": 16}


def test_an_if_better_live_job_waits_in_shadow_until_live_evidence_promotes_it(
    tmp_path: Path, trained: list[Path]
) -> None:
    folder = tmp_path / "models"
    bad = craft(trained[0], folder, "bad-calibrator", BAD_CALIBRATOR)  # truly worse: "rise" at ~95%
    (folder / "ACTIVE").write_text(bad)
    ts = trades(moves(260, seed=11), seed=11)
    with exchange(ts) as (feed, url), app(tmp_path, url, shadow_models=0, promote_min_outcomes=100) as c:
        assert live(c).cfg.policy.enabled is False  # TICKCAST_PROMOTION is off
        seed_store(c)
        r = c.post(
            "/train",
            json={"exchange": "synthetic", "symbol": "BTC-USD", "config": TINY, "activate": "if_better_live"},
        )
        assert r.status_code == 202, r.text
        job = wait(c, r.json()["id"], {"succeeded", "failed"})
        assert job["status"] == "succeeded", job
        new = job["result"]["model_id"]
        assert job["result"]["activated"] is False and "live" in job["result"]["reason"]
        assert serving(c).id == bad
        assert live(c).log.pinned() == [new]

        step(c, feed, 60)
        live(c).refresh()  # chooses the shadows: the job's model, although shadow_models is 0
        step(c, feed, 150)  # 89 paired outcomes: under the minimum
        live(c).refresh()
        assert serving(c).id == bad
        board = c.get(f"{MARKET_PATH}/live").json()
        assert {m["model_id"]: m["role"] for m in board["models"]} == {bad: "active", new: "shadow"}

        step(c, feed, 260)
        live(c).refresh()
        assert serving(c).id == new
        [decision] = c.get(f"/models/{new}/live").json()["history"]
        assert decision["decision"] == "promoted" and decision["n"] >= 100 and decision["p_value"] < 0.05
        assert live(c).log.pinned() == []  # promoted: no longer waiting


def test_with_the_policy_off_only_pinned_challengers_are_tested(tmp_path: Path, trained: list[Path]) -> None:
    """decide() on real logged outcomes: an unpinned better shadow is never promoted nor refused."""
    folder = tmp_path / "models"
    bad = craft(trained[0], folder, "bad-calibrator", BAD_CALIBRATOR)
    good = craft(trained[0], folder, "own-calibrator")
    (folder / "ACTIVE").write_text(bad)
    ts = trades(moves(200, seed=12), seed=12)
    with exchange(ts) as (feed, url), app(tmp_path, url, shadow_ids=[good], shadow_models=1) as c:
        step(c, feed, 60)
        live(c).refresh()
        step(c, feed, 200)
        log, markets = live(c).log, [("binance", "BTC-USD")]
        off = Policy(False, 100, 0.95)
        assert decide(log, off, markets, bad, [good]) is None and log.decisions() == []
        assert decide(log, off, markets, bad, [good], frozenset({good})) == good
        assert [d["decision"] for d in log.decisions()] == ["promoted"]
