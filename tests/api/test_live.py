"""Live evaluation's HTTP surface against the real app and a fake Binance on 127.0.0.1: the
promotion policy on models whose quality is known, replay of the prediction log, refitted
calibrators, GET /predictions' filters and CSV, the error answers and the Prometheus gauges."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from app.api.live_schemas import PredictionLogOut
from app.market.sources import synthetic
from app.ml import checkpoint
from tests.helpers.apps import install_models, make_settings
from tests.helpers.bodies import body, csv_body
from tests.helpers.live import (
    BAD_CALIBRATOR,
    MARKET_PATH,
    app,
    craft,
    exchange,
    live,
    logged,
    moves,
    serving,
    step,
    stored,
    trades,
)


def history(c: TestClient, model_id: str) -> list[dict[str, Any]]:
    r = c.get(f"/models/{model_id}/live")
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()["history"]
    return rows


def test_a_truly_better_challenger_is_promoted_after_the_minimum_count_an_equal_one_never(
    tmp_path: Path, trained: list[Path]
) -> None:
    """The active model is a trained net with a calibrator that says "rise" at about 95% whatever
    happens; the challenger is the same net with its own calibrator (truly better); a third is
    an identical copy of the active one (equal)."""
    folder = tmp_path / "models"
    bad = craft(trained[0], folder, "bad-calibrator", BAD_CALIBRATOR)
    good = craft(trained[0], folder, "own-calibrator")
    equal = craft(folder / f"{bad}.pt", folder, "copy-of-active")
    (folder / "ACTIVE").write_text(bad)
    ts = trades(moves(260, seed=5), seed=5)
    policy = {"promotion": "if_better_live", "promote_min_outcomes": 100, "shadow_ids": [good, equal]}
    with exchange(ts) as (feed, url), app(tmp_path, url, shadow_models=2, **policy) as c:
        step(c, feed, 60)
        step(c, feed, 150)  # 89 paired outcomes: under the minimum, no test, no decision
        live(c).refresh()
        assert serving(c).id == bad
        assert (
            history(c, good) == history(c, equal) == []
            and c.get(f"{MARKET_PATH}/live").json()["decisions"] == []
        )

        step(c, feed, 200)  # 139
        live(c).refresh()
        assert serving(c).id == good
        assert c.app.state.services.registry.active_id() == good  # ACTIVE, or the database's pointer
        assert {m["id"]: m["active"] for m in c.get("/models").json()}[good] is True
        [promoted] = history(c, good)
        assert promoted["decision"] == "promoted"
        assert (promoted["active_id"], promoted["challenger_id"]) == (bad, good)
        assert promoted["n"] == 139 and promoted["mean_diff"] > 0.1 and promoted["p_value"] < 1e-4
        assert promoted["statistic"] > 3 and (promoted["confidence"], promoted["min_outcomes"]) == (0.95, 100)
        assert "lower" in promoted["reason"]
        [refused] = history(c, equal)
        assert refused["decision"] == "refused" and refused["active_id"] == bad and refused["n"] == 139
        assert (refused["mean_diff"], refused["p_value"]) == (0.0, 0.5)

        step(c, feed, 260)  # the promoted model now serves, and is logged as the active one
        roles = [r["role"] for r in logged(c, model_id=good)]  # ticks 60 .. 259, in order
        assert roles == ["shadow"] * 140 + ["active"] * 60
        live(c).refresh()
        assert serving(c).id == good
        against_good = [d for d in history(c, equal) if d["active_id"] == good]
        assert against_good and against_good[0]["decision"] == "refused" and against_good[0]["mean_diff"] < 0
        assert {d["decision"] for d in history(c, equal)} == {"refused"}
        board = c.get(f"{MARKET_PATH}/live").json()
        assert [(m["model_id"], m["role"]) for m in board["models"]][0] == (good, "active")
        assert {m["model_id"]: m["role"] for m in board["models"]}[equal] == "shadow"
        assert [d["decision"] for d in board["decisions"]].count("promoted") == 1


def test_a_copy_never_beats_its_original_however_long_it_runs(tmp_path: Path, trained: list[Path]) -> None:
    folder = tmp_path / "models"
    install_models(tmp_path, trained[:1])
    active = trained[0].stem
    equal = craft(trained[0], folder, "exact-copy")
    ts = trades(moves(330, seed=8), seed=8)
    policy = {"promotion": "if_better_live", "promote_min_outcomes": 100, "shadow_ids": [equal]}
    with exchange(ts) as (feed, url), app(tmp_path, url, **policy) as c:
        step(c, feed, 60)
        for upto in (180, 330):
            step(c, feed, upto)
            live(c).refresh()
            assert serving(c).id == active
        got = history(c, equal)  # one refusal per another min_outcomes of evidence
        assert [(d["decision"], d["n"]) for d in got] == [("refused", 269), ("refused", 119)]


def test_replay_reproduces_every_logged_probability(tmp_path: Path, trained: list[Path]) -> None:
    ids = install_models(tmp_path, trained)  # the first active, the second scored in shadow
    ts = trades(moves(200, seed=6), seed=6)
    with exchange(ts) as (feed, url), app(tmp_path, url) as c:
        step(c, feed, 60)
        step(c, feed, 200)
        r = c.get("/predictions", params={"replay": "true", "limit": 1000})
        assert r.status_code == 200, r.text
        rows = r.json()["predictions"]
        assert len(rows) == 2 * 140 and {r["model_id"] for r in rows} == set(ids)
        assert all(abs(r["replayed"] - r["probability"]) <= 1e-6 for r in rows)
        # and independently, from the stored ticks and the model files, as /predict would
        ticks = stored(c)
        for mid in ids:
            model = checkpoint.load(tmp_path / "models" / f"{mid}.pt")
            mine = [r for r in rows if r["model_id"] == mid]
            assert {r["role"] for r in mine} == {"active" if mid == ids[0] else "shadow"}
            for k in (0, 1, 70, 139):
                i = 60 + k
                assert mine[k]["time"] == ticks.time[i]
                assert model.predict(ticks[: i + 1]) == pytest.approx(mine[k]["probability"], abs=1e-6)
        assert c.get("/predictions", params={"limit": 1}).json()["predictions"][0]["replayed"] is None


def test_recalibration_serves_a_better_calibrator_and_records_one_that_is_not(
    tmp_path: Path, trained: list[Path]
) -> None:
    folder = tmp_path / "models"
    bad = craft(trained[0], folder, "bad-calibrator", BAD_CALIBRATOR)
    other = craft(trained[1], folder, "another-model")
    (folder / "ACTIVE").write_text(bad)
    # 1,400 ordinary ticks; then 600 that mostly fall and 700 that mostly rise, so that a refit
    # on the older three quarters is misled by the falls on the newest quarter it is judged on
    steps = moves(1460, seed=9) + moves(600, 0.1, seed=10) + moves(700, 0.9, seed=11)
    ts = trades(steps, seed=9)
    with exchange(ts) as (feed, url):
        with app(tmp_path, url) as c:
            step(c, feed, 60)
            step(c, feed, 1460)
            kept = live(c).recalibrate()
            assert kept is not None and kept.kept and kept.version == 1
            assert kept.report["log_loss_after"] < kept.report["log_loss_before"]
            served = serving(c)
            assert (served.id, served.calibrator_version, served.calibrator) == (bad, 1, kept.calibrator)
            answer = c.post("/predict", json=body(stored(c), n=40)).json()
            assert answer["model_id"] == bad and answer["calibrator_version"] == 1
            assert answer["probability"] == pytest.approx(
                float(kept.calibrator.apply(served.logits(served.spec.last_window(stored(c))[None]))[0])
            )

            step(c, feed, len(ts))
            rows = logged(c, model_id=bad, start=ts[1460]["T"] / 1000 + 1e-6)
            assert rows and {r["calibrator_version"] for r in rows} == {1}
            replay = c.get(
                "/predictions", params={"replay": "true", "start": rows[0]["time"], "limit": 500}
            ).json()
            assert all(abs(r["replayed"] - r["probability"]) <= 1e-6 for r in replay["predictions"])

            refused = live(c).recalibrate()
            assert refused is not None and not refused.kept and refused.version == 2
            assert refused.report["log_loss_after"] >= refused.report["log_loss_before"]
            assert serving(c).calibrator_version == 1
            listed = c.get(f"/models/{bad}/live").json()["calibrators"]
            assert [(x["version"], x["kept"], x["replaces"]) for x in listed] == [(2, False, 1), (1, True, 0)]
            assert all(x["n_fit"] >= 1000 and x["n_holdout"] > 0 and x["kind"] == "platt" for x in listed)
            assert c.post("/predict", json=body(stored(c), n=40)).json()["calibrator_version"] == 1
            # activated again by hand (the file's own calibrator is loaded): the kept one comes back
            for mid in (other, bad):
                assert c.post(f"/models/{mid}/activate").status_code == 200
            live(c).work()
            assert serving(c).calibrator_version == 1
            assert c.post("/predict", json=body(stored(c), n=40)).json()["calibrator_version"] == 1
        with app(tmp_path, url) as c:  # a restart serves the newest kept calibrator again
            served = serving(c)
            assert (served.id, served.calibrator_version, served.calibrator) == (bad, 1, kept.calibrator)


def test_prediction_log_filters_limit_and_csv(tmp_path: Path, trained: list[Path]) -> None:
    ids = install_models(tmp_path, trained)
    ts = trades(moves(160, seed=7), seed=7)
    other = synthetic.generate(100, seed=7)  # a second market, imported in two parts
    with exchange(ts) as (feed, url), app(tmp_path, url) as c:
        for part in (other[:60], other):
            r = c.post("/markets/kraken/ETH-USD/import", content=csv_body(part))
            assert r.status_code == 200, r.text
            live(c).work()
        step(c, feed, 60)
        step(c, feed, 160)
        rows = logged(c)
        assert len(rows) == 2 * 100 + 2 * 40
        keys = [(r["time"], r["seq"], r["model_id"]) for r in rows]
        assert keys == sorted(keys)
        ours = [r for r in rows if (r["exchange"], r["symbol"]) == ("binance", "BTC-USD")]
        theirs = [r for r in rows if (r["exchange"], r["symbol"]) == ("kraken", "ETH-USD")]
        assert len(ours) == 200 and len(theirs) == 80
        assert logged(c, exchange="binance", symbol="BTC-USD") == logged(c, exchange="binance") == ours
        assert logged(c, symbol="ETH-USD") == logged(c, exchange="kraken") == theirs
        assert logged(c, exchange="kraken", symbol="BTC-USD") == logged(c, exchange="coinbase") == []
        for mid in ids:
            assert logged(c, model_id=mid) == [r for r in rows if r["model_id"] == mid]
            assert logged(c, model_id=mid, exchange="kraken") == [r for r in theirs if r["model_id"] == mid]
        assert logged(c, model_id="no-such-model") == []
        t0, t1 = ours[40]["time"], ours[120]["time"]
        assert logged(c, start=t0, end=t1) == [r for r in rows if t0 <= r["time"] < t1]
        assert logged(c, start=t1, end=t1) == []

        page = c.get("/predictions", params={"limit": 7}).json()
        assert page["truncated"] is True and page["predictions"] == rows[:7]
        assert c.get("/predictions", params={"limit": 280}).json()["truncated"] is False
        assert c.get("/predictions", params={"limit": 279}).json()["truncated"] is True

        r = c.get("/predictions", params={"limit": 7, "format": "csv", "model_id": ids[1]})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert r.headers["x-truncated"] == "true"
        table = list(csv.DictReader(io.StringIO(r.text)))
        assert list(table[0]) == list(PredictionLogOut.model_fields)
        want = [x for x in rows if x["model_id"] == ids[1]][:7]
        assert [(float(x["time"]), int(x["seq"]), float(x["probability"])) for x in table] == [
            (x["time"], x["seq"], x["probability"]) for x in want
        ]
        assert [x["role"] for x in table] == ["shadow"] * 7


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 100_001}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"start": "nan"}, "start"),
        ({"end": "inf"}, "end"),
        ({"format": "xml"}, "format"),
        ({"replay": "maybe"}, "replay"),
        ({"model_id": "x" * 129}, "model_id"),
    ],
)
def test_bad_prediction_log_queries_are_422_naming_the_field(
    client: TestClient, query: dict[str, Any], field: str
) -> None:
    r = client.get("/predictions", params=query)
    assert r.status_code == 422
    assert [e["loc"] for e in r.json()["detail"]] == [["query", field]]


def test_unknown_markets_and_models_are_404_malformed_names_422(client: TestClient) -> None:
    assert client.get("/markets/kraken/XRP-USD/live").status_code == 404
    assert client.get("/markets/kra%20ken/XRP-USD/live").status_code == 422
    r = client.get("/models/no-such-model/live")
    assert r.status_code == 404 and "no-such-model" in r.json()["detail"]
    assert client.get("/models/-dash-first/live").status_code == 422
    # a configured market never scored: an empty leaderboard with the active model, not an error
    board = client.get("/markets/synthetic/BTC-USD/live").json()
    assert board["scored_through"] is None and board["decisions"] == []
    assert [m["role"] for m in board["models"]][:1] == ["active"]
    assert board["models"][0]["windows"]["last_1000"]["count"] == 0
    # a model with no live record yet: empty lists, not an error
    first = client.get("/models").json()[0]["id"]
    assert client.get(f"/models/{first}/live").json() == {
        "model_id": first,
        "markets": [],
        "history": [],
        "calibrators": [],
    }


def test_predictions_older_than_the_retention_are_pruned(tmp_path: Path, trained: list[Path]) -> None:
    install_models(tmp_path, trained[:1])
    ts = trades(moves(160, seed=13), seed=13)
    with exchange(ts) as (feed, url), app(tmp_path, url, prediction_retention_s=10.0) as c:
        step(c, feed, 60)
        step(c, feed, 160)
        before = logged(c)
        newest = before[-1]["time"]
        assert before[0]["time"] < newest - 10  # the trades span more than the retention
        live(c).refresh()
        kept = logged(c)
        assert kept == [r for r in before if r["time"] >= newest - 10] and len(kept) < len(before)


@pytest.mark.parametrize(
    ("setting", "value"),
    [("promote_min_outcomes", 99), ("promote_confidence", 1.0), ("promotion", "always"), ("gap_s", 0)],
)
def test_live_settings_are_bounded(tmp_path: Path, setting: str, value: object) -> None:
    with pytest.raises(ValidationError, match=setting):
        make_settings(tmp_path, **{setting: value})


def test_metrics_show_the_live_figures_and_alerts(tmp_path: Path, trained: list[Path]) -> None:
    [active] = install_models(tmp_path, trained[:1])
    ts = trades(moves(320, seed=12), seed=12)
    with exchange(ts) as (feed, url), app(tmp_path, url, live_auc_floor=0.99) as c:
        step(c, feed, 60)
        step(c, feed, 320)  # 259 outcomes: over the 200 the alerts wait for
        live(c).refresh()
        entry = c.get(f"{MARKET_PATH}/live").json()["models"][0]
        families = {f.name: f for f in text_string_to_metric_families(c.get("/metrics").text)}
        labels = {"model": active, "exchange": "binance", "symbol": "BTC-USD"}

        def value(name: str, **more: str) -> float:
            [v] = [s.value for s in families[name].samples if s.labels == {**labels, **more}]
            return float(v)

        last = entry["windows"]["last_1000"]
        assert value("tickcast_live_auc", window="last_1000") == pytest.approx(last["auc"])
        assert value("tickcast_live_log_loss", window="last_hour") == pytest.approx(last["log_loss"])
        assert value("tickcast_live_outcomes", window="last_1000") == last["count"] == 259
        assert entry["alerts"]["auc_floor"] is True  # no tiny model reaches an AUC of 0.99
        assert value("tickcast_live_alert", alert="auc_floor") == 1
        assert value("tickcast_live_alert", alert="ece_bound") == float(entry["alerts"]["ece_bound"])
        [total] = [
            s.value for s in families["tickcast_live_predictions"].samples if s.name.endswith("_total")
        ]
        assert total == 260  # this app's scoring: one model, every tick after the start
