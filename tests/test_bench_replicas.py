"""scripts/bench_replicas.py: replicas on a fresh PostgreSQL database, a kill -9 of the ingesting
one and activations propagated, as one JSON line.

Timings are never asserted against their targets (a shared machine makes them noise): the run
must finish, carry every figure, lose and double no trade, fail no request on the survivors, and
its verdicts must agree with its figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.helpers import pg

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "bench_replicas.py"
KEYS = {
    "replicas",
    "pull_interval_s",
    "trade_rate",
    "trades",
    "ticks_lost",
    "ticks_doubled",
    "requests",
    "failed_requests",
    "failures",
    "killed_replica_requests",
    "takeover_s",
    "activations",
    "activation_problems",
    "activation_p50_s",
    "activation_p99_s",
    "activation_max_s",
    "targets",
}


def bench_databases() -> set[str]:
    with psycopg.connect(pg.ADMIN_URL, autocommit=True) as c:
        rows = c.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'tickcast_bench_replicas_%'"
        ).fetchall()
    return {r[0] for r in rows}


def test_a_small_run_prints_every_figure_as_one_json_line() -> None:
    why = pg.unavailable()
    if why is not None:
        pytest.skip(why)
    before = bench_databases()
    args = ["--replicas", "2", "--activations", "3", "--interval", "0.5", "--rate", "10", "--history", "400"]
    args += ["--predict-rate", "3", "--after-kill", "1", "--url", pg.ADMIN_URL, "--json"]
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    lines = out.stdout.strip().splitlines()
    assert lines, out.stderr[-3000:]
    res = json.loads(lines[-1])
    assert KEYS <= set(res), out.stderr[-3000:]
    assert bench_databases() == before  # its database was dropped

    assert res["replicas"] == 2 and res["pull_interval_s"] == 0.5 and res["trade_rate"] == 10
    # the ledger: every trade the exchange made is stored once, across the kill
    assert res["trades"] > 400 and res["ticks_lost"] == 0 and res["ticks_doubled"] == 0
    assert res["requests"] > 0 and res["failed_requests"] == 0, res["failures"]
    assert res["killed_replica_requests"] > 0
    assert 0 < res["takeover_s"] < 60
    assert res["activations"] == 3 and res["activation_problems"] == 0
    assert 0 < res["activation_p50_s"] <= res["activation_p99_s"] <= res["activation_max_s"]

    targets = res["targets"]
    assert set(targets) == {
        "ticks_lost",
        "ticks_doubled",
        "failed_requests",
        "takeover_s",
        "activation_p99_s",
    }
    takeover, p99 = targets["takeover_s"], targets["activation_p99_s"]
    assert takeover["value"] == res["takeover_s"] and takeover["met"] == (res["takeover_s"] <= 1.0)
    assert p99["value"] == res["activation_p99_s"] and p99["met"] == (res["activation_p99_s"] <= 1.0)
    assert all(targets[k]["met"] for k in ("ticks_lost", "ticks_doubled", "failed_requests"))
    assert out.returncode == (0 if all(v["met"] for v in targets.values()) else 1)
    text = "\n".join(lines[:-1])
    assert "takeover after kill -9 of the leader" in text and "activation propagation over 3" in text
    assert any(line.strip().startswith(("[ok] takeover_s", "[MISS] takeover_s")) for line in lines)
