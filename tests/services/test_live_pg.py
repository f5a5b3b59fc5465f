"""The prediction log on PostgreSQL: the same answers as the SQLite log for the same steps, its
schema versions, a scoring step as one transaction, a lost connection, and the scorer role that
replicas sharing one database take turns on (closing or killing the holder frees it)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from app.market.storage import StoreError
from app.services.live.backends import open_prediction_log
from app.services.live.log import PredictionLog, Query, Resolved, Scored
from app.services.live.pg import PG_MIGRATIONS, SCORER_LOCK, PgPredictionLog
from tests.helpers.apps import install_models
from tests.helpers.live import app, exchange, live, log_in, logged, moves, step, stored, trades, train_tiny

MARKETS = (("binance", "BTC-USD"), ("kraken", "ETH-USD"))
MODELS = (("m-a", 1, "active"), ("M-b", 2, "shadow"), ("m_c", 1, "shadow"))  # (id, horizon, role)


def steps(seed: int, n: int = 90, cuts: tuple[int, ...] = (30, 55, 90)) -> list[tuple[Any, ...]]:
    """Scoring steps over one market's ticks, as `scorer.step` makes them: each model scores the
    new ticks (the outcome known where the tick `horizon` later is in), and resolves the ones the
    previous step left open. Ticks share timestamps (seq tells them apart)."""
    rng = np.random.default_rng(seed)
    time = 1_000.0 + np.cumsum(rng.choice([0.0, 0.0, 0.3, 0.6], n))
    price, seq = 100 + np.cumsum(rng.choice([-1.0, 0.0, 1.0], n)), np.arange(n) + 7
    out, start = [], 1
    for end in cuts:
        scored, resolved = [], []
        for mid, h, role in MODELS:
            idx = np.arange(start, end)
            y = np.full(len(idx), np.nan)
            known = idx + h < end
            y[known] = price[idx[known] + h] > price[idx[known]]
            p = rng.uniform(0.01, 0.99, len(idx))
            last_move = np.sign(price[idx] - price[idx - 1])
            scored.append(Scored(mid, role, h - 1, time[idx], seq[idx], p, np.log(p / (1 - p)), last_move, y))
            old = np.arange(max(1, start - h), start)
            old = old[old + h < end]
            resolved.append(Resolved(mid, time[old], seq[old], (price[old + h] > price[old]).astype(float)))
        out.append(((float(time[end - 1]), int(seq[end - 1])), scored, resolved))
        start = end
    return out


def fill(log: PredictionLog) -> None:
    """The same history for any backend: steps on two markets (one re-sent with other
    probabilities, which must change nothing), metrics, decisions, challengers, calibrators."""
    for k, (ex, sym) in enumerate(MARKETS):
        history = steps(seed=k)
        for pos, scored, resolved in history:
            log.record(ex, sym, pos, scored, resolved)
        pos, scored, resolved = history[1]
        again = [Scored(**{**vars(s), "probability": 1 - s.probability}) for s in scored]
        log.record(ex, sym, history[-1][0], again, [])
        log.save_metrics(ex, sym, "m-a", {"windows": {"n": k}})
    for decision in ("refused", "refused", "promoted"):
        log.add_decision("m-a", "M-b", decision, {"p_value": 0.5, "why": decision})
    for mid in ("m_c", "M-b", "m_c", "gone"):
        log.pin(mid)
    log.unpin("gone")
    for kept in (True, False, True, False):
        log.add_calibrator("m-a", {"kind": "platt", "a": 1.0, "b": float(kept)}, {"ece": 0.1}, kept)


def without(rows: list[dict[str, Any]], *keys: str) -> list[dict[str, Any]]:
    """Rows less the wall-clock times each backend stamps for itself."""
    return [{k: v for k, v in r.items() if k not in keys} for r in rows]


def answers(log: PredictionLog) -> dict[str, Any]:
    """Everything the log's readers say about `fill`'s history."""
    ex, sym = MARKETS[0]
    queries = [
        Query(),
        Query(exchange="kraken"),
        Query(symbol="BTC-USD", model_id="M-b"),
        Query(start=1_005.0, end=1_012.0),
        Query(model_id="m-a", limit=7),
        Query(model_id="nobody"),
    ]
    return {
        "positions": [log.position(*m) for m in (*MARKETS, ("binance", "NONE"))],
        "outcomes": [
            {k: v.tolist() for k, v in vars(log.outcomes(ex, sym, mid, last=last, since=since)).items()}
            for mid, _, _ in (*MODELS, ("nobody", 0, ""))
            for last, since in ((1_000, None), (5, None), (1_000, 1_010.0))
        ],
        "paired": [[a.tolist() for a in log.paired(ex, sym, "m-a", b, last=40)] for b in ("M-b", "nobody")],
        "queries": [without(log.query(q), "scored_at", "resolved_at") for q in queries],
        "open": [r["resolved_at"] is None for r in log.query(Query())],
        "metrics": [row[:3] + row[4:] for row in log.metrics()],
        "decisions": [without(log.decisions(m, limit), "at") for m, limit in ((None, 2), ("M-b", 100))],
        "pinned": log.pinned(),
        "calibrators": without(log.calibrators("m-a"), "fitted_at"),
        "calibrator": [log.calibrator("m-a"), log.calibrator("m-a", 2), log.calibrator("nobody")],
    }


def test_the_same_steps_read_back_the_same_from_postgresql_as_from_sqlite(
    tmp_path: Path, pg_url: str
) -> None:
    lite, pg = open_prediction_log(str(tmp_path / "t.db")), open_prediction_log(pg_url)
    assert isinstance(pg, PgPredictionLog) and not isinstance(lite, PgPredictionLog)
    try:
        for log in (lite, pg):
            fill(log)
        want, got = answers(lite), answers(pg)
        assert got == want
        assert len(want["queries"][0]) == 2 * 89 * 3 and len(want["queries"][4]) == 7
        assert want["pinned"] == ["M-b", "m_c"] and want["paired"][0][0]
        # byte order, as in SQLite: "M-b" before "m-a" (COLLATE "C", whatever the database locale)
        assert [r["model_id"] for r in want["queries"][0][:3]] == ["M-b", "m-a", "m_c"]
        dropped = lite.prune(5.0)
        assert dropped > 0 and pg.prune(5.0) == dropped
        assert without(pg.query(Query()), "scored_at", "resolved_at") == without(
            lite.query(Query()), "scored_at", "resolved_at"
        )
    finally:
        lite.close()
        pg.close()


def schema_version(url: str) -> int:
    with psycopg.connect(url) as c:
        row = c.execute("SELECT version FROM live_schema").fetchone()
        assert row is not None
        return int(row[0])


def test_the_schema_is_created_upgraded_from_version_0_and_a_newer_one_refused(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as c:  # what a tickcast before any table left
        c.execute("CREATE TABLE live_schema (version INTEGER NOT NULL)")
        c.execute("INSERT INTO live_schema VALUES (0)")
    log = PgPredictionLog(pg_url)
    [(pos, scored, resolved), *_] = steps(seed=3)
    log.record("binance", "BTC-USD", pos, scored, resolved)
    log.close()
    newest = len(PG_MIGRATIONS)
    assert schema_version(pg_url) == newest
    log = PgPredictionLog(pg_url)  # opened again: nothing to do, nothing lost
    assert log.position("binance", "BTC-USD") == pos and len(log.query(Query())) == sum(
        len(s.time) for s in scored
    )
    log.close()

    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute("UPDATE live_schema SET version = %s", (newest + 1,))
    secret = pg_url.replace("postgres@", "postgres:s3cret@")  # trust authentication ignores it
    with pytest.raises(
        StoreError, match=f"prediction log schema version {newest + 1}.*upgrade tickcast"
    ) as e:
        PgPredictionLog(secret)
    assert "s3cret" not in str(e.value) and "***" in str(e.value)
    assert schema_version(pg_url) == newest + 1  # left as the newer tickcast wrote it


def test_a_scoring_step_is_one_transaction_a_failed_one_leaves_nothing(database: str) -> None:
    log = open_prediction_log(database)
    try:
        first, second, _ = steps(seed=4)
        log.record("binance", "BTC-USD", *first)
        before = log.query(Query())
        pos, scored, resolved = second
        newcomer = Scored(**{**vars(scored[0]), "model_id": "newcomer"})
        # fails on the step's last statement (a position no store gives: over 64 bits), after its
        # predictions, its outcomes and a new series were written
        with pytest.raises((OverflowError, psycopg.errors.NumericValueOutOfRange)):
            log.record("binance", "BTC-USD", (pos[0], 2**70), [*scored, newcomer], resolved)
        assert log.position("binance", "BTC-USD") == first[0]
        assert log.query(Query()) == before and any(r["outcome"] is None for r in before)
        log.record("binance", "BTC-USD", pos, [*scored, newcomer], resolved)  # the same step again
        assert log.position("binance", "BTC-USD") == pos
        rows = log.query(Query(limit=10_000))
        assert len([r for r in rows if r["model_id"] == "newcomer"]) == len(newcomer.time)
        assert len(rows) == len(before) + sum(len(s.time) for s in (*scored, newcomer))
    finally:
        log.close()


def terminate(url: str, where: str, *args: Any) -> int:
    """pg_terminate_backend of this database's sessions matching `where`, waiting until they are gone."""
    with psycopg.connect(url, autocommit=True) as c:
        pids = [
            r[0]
            for r in c.execute(
                f"SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND {where}", args
            )
        ]
        for pid in pids:
            c.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
    return len(pids)


def test_after_a_lost_connection_one_call_fails_and_the_next_reconnects(pg_url: str) -> None:
    log = PgPredictionLog(pg_url)
    try:
        first, second, third = steps(seed=5)
        log.record("binance", "BTC-USD", *first)
        mine = "application_name = %s"
        assert terminate(pg_url, mine, f"tickcast-live-{os.getpid()}") == 1
        with pytest.raises(log.errors):
            log.position("binance", "BTC-USD")
        assert log.position("binance", "BTC-USD") == first[0]
        assert terminate(pg_url, mine, f"tickcast-live-{os.getpid()}") == 1
        with pytest.raises(log.errors):
            log.record("binance", "BTC-USD", *second)
        log.record("binance", "BTC-USD", *second)
        log.record("binance", "BTC-USD", *third)
        assert log.position("binance", "BTC-USD") == third[0]
    finally:
        log.close()


def test_a_position_never_moves_back_on_postgresql(pg_url: str) -> None:
    """A step that outlived its scorer role commits late: it must not undo the new scorer's steps."""
    log = PgPredictionLog(pg_url)
    first, second, _ = steps(seed=6)
    log.record("binance", "BTC-USD", *second)
    log.record("binance", "BTC-USD", *first)
    assert log.position("binance", "BTC-USD") == second[0]
    log.close()


HOLDER = (
    "pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
    " AND objid = hashtext(%s)::oid)"
)


def test_one_log_on_a_database_holds_the_scorer_role_until_it_closes_or_is_killed(pg_url: str) -> None:
    a, b, c = (PgPredictionLog(pg_url) for _ in range(3))
    try:
        assert a.claim_scorer() and not b.claim_scorer() and not c.claim_scorer()
        assert a.claim_scorer() and not b.claim_scorer()  # held from poll to poll
        a.close()
        assert not a.claim_scorer()
        assert b.claim_scorer() and not c.claim_scorer()
        assert terminate(pg_url, HOLDER, SCORER_LOCK) == 1  # b's lock session, as a SIGKILL ends it
        assert c.claim_scorer()
        assert not b.claim_scorer()  # b finds its session gone and the role taken
        c.close()
        assert b.claim_scorer()
    finally:
        for log in (a, b, c):
            log.close()
    lite = open_prediction_log(":memory:")
    assert lite.claim_scorer()  # SQLite: one service per file, always the scorer
    lite.close()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("live-model"))


def test_replicas_sharing_the_log_score_one_at_a_time_and_take_over_from_a_killed_one(
    tmp_path: Path, model_file: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_in(pg_url, monkeypatch)
    install_models(tmp_path, [model_file])
    ts = trades(moves(200, seed=7), seed=7)
    with exchange(ts) as (feed, url), app(tmp_path, url) as a, app(tmp_path, url) as b:
        step(a, feed, 60)  # a scores first: the market starts at its newest tick
        step(a, feed, 120)
        live(b).work()  # b stores nothing and scores nothing: a holds the role
        assert live(a).stats.scoring and not live(b).stats.scoring
        assert live(b).stats.predictions == 0 and live(a).stats.predictions == 60
        live(b).refresh()  # not b's to do either
        assert [m["computed_at"] for m in b.get("/markets/binance/BTC-USD/live").json()["models"]] == [None]
        live(a).refresh()
        board = b.get("/markets/binance/BTC-USD/live").json()  # b serves what a computed
        assert board == a.get("/markets/binance/BTC-USD/live").json() and board["models"][0]["computed_at"]
        assert logged(b) == logged(a)

        assert terminate(pg_url, HOLDER, SCORER_LOCK) == 1  # a's lock session dies (as with kill -9)
        step(b, feed, 200)  # b pulls, takes the role at once and scores from a's position
        live(a).work()
        assert live(b).stats.scoring and not live(a).stats.scoring
        ticks, rows = stored(b), logged(b)
        idx = np.arange(60, 200)  # every tick once, whoever scored it
        assert [r["time"] for r in rows] == ticks.time[idx].tolist()
        assert [r["seq"] for r in rows] == sorted({r["seq"] for r in rows})
        assert live(b).stats.predictions == 80 and live(a).stats.predictions == 60


def test_a_replica_that_does_not_score_serves_the_calibrator_the_scorer_kept(
    tmp_path: Path, model_file: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_in(pg_url, monkeypatch)
    install_models(tmp_path, [model_file])
    ts = trades(moves(120, seed=8), seed=8)
    with exchange(ts) as (feed, url), app(tmp_path, url) as a, app(tmp_path, url) as b:
        step(a, feed, 60)  # a takes the scorer role
        model = live(b).predictor.model
        assert model is not None and model.calibrator_version == 0
        refit = model.calibrator.to_dict()
        version = live(a).log.add_calibrator(model.id, refit, {"kept_by": "test"}, kept=True)
        live(b)._next_refresh = 0.0  # due now, as it is every TICKCAST_LIVE_METRICS_S
        live(b).work()
        assert not live(b).stats.scoring
        served = live(b).predictor.model
        assert served is not None and served.id == model.id and served.calibrator_version == version
        r = b.get("/predict/binance/BTC-USD")
        assert r.status_code == 200, r.text
        assert r.json()["calibrator_version"] == version
