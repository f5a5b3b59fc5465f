#!/usr/bin/env python
"""Replicas on one PostgreSQL database: ingestion failover and model activation, under load.

Creates a fresh database on the server of `--url` (dropped at the end), trains two tiny CNNs and
publishes them there (the first active), starts a fake Binance on 127.0.0.1 whose trades keep
coming (`--rate` per second, consecutive ids; each replica asks through a base URL of its own, so
the exchange knows who pulled what), then `--replicas` `tickcast serve` processes on that
database pulling the market every `--interval` s, each under a bounded load (`--predict-rate`
requests per second, POST /predict and GET /predict/binance/BTC-USD in turn). Then:

  activation   `--activations` times, POST /models/{id}/activate on one replica (the two models in
               turn): the time until every other replica's /predict answers with that model_id;
  failover     kill -9 of the replica that pulls the market: the time from the kill until the
               first trade a surviving replica pulled is stored;
  ledger       once the trades stop and the store caught up: stored trade ids against the
               exchange's (lost, doubled);
  requests     the load's failures on the replicas that were not killed.

Targets: 0 lost, 0 doubled, 0 failed requests outside the killed replica, takeover within two
pull intervals, activation p99 <= 1 s.

    python scripts/bench_replicas.py
    python scripts/bench_replicas.py --json     # ... last line: one JSON object
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse, urlsplit, urlunsplit

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.market.sources import synthetic  # noqa: E402

MARKET = ("binance", "BTC-USD")
PAIR = "BTCUSDT"
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ACTIVATION_TIMEOUT_S = 10.0


# ---------------------------------------------------------------- the exchange


class Exchange:
    """aggTrades with a growing truth (trade i has id i) served at `/<tag>/api/v3/aggTrades`;
    `served` says which replica got which trades when."""

    def __init__(self, rate: float, history: int) -> None:
        self.rate = rate
        now_ms = int(time.time() * 1000)
        self.trades = [
            self._trade(i, now_ms - (history - i) * 900_000 // max(history, 1)) for i in range(history)
        ]
        self.served: list[tuple[str, int | None, float]] = []  # (tag, last id served, monotonic)
        self._lock = threading.Lock()
        self.growing = threading.Event()
        self._stop = threading.Event()

    @staticmethod
    def _trade(i: int, t_ms: int) -> dict[str, Any]:
        price = 6000.0 + 5.0 * ((i * 7919) % 13 - 6) / 6 + (i % 97) * 0.01
        q = f"{0.01 + (i * 31 % 50) / 100:.4f}"
        return {"a": i, "p": f"{price:.2f}", "q": q, "f": i, "l": i, "T": t_ms, "m": i % 3 == 0, "M": True}

    def ids(self) -> int:
        with self._lock:
            return len(self.trades)

    def _grow(self) -> None:
        while not self._stop.wait(1.0 / self.rate):
            if self.growing.is_set():
                with self._lock:
                    self.trades.append(self._trade(len(self.trades), int(time.time() * 1000)))

    def page(self, tag: str, q: dict[str, str]) -> list[dict[str, Any]]:
        limit = min(int(q.get("limit", "500")), 1000)
        with self._lock:
            if "fromId" in q:
                rows = self.trades[int(q["fromId"]) : int(q["fromId"]) + limit]
            else:
                lo, hi = int(q.get("startTime", 0)), int(q.get("endTime", 2**62))
                rows = [t for t in self.trades if lo <= t["T"] <= hi][:limit]
            self.served.append((tag, rows[-1]["a"] if rows else None, time.monotonic()))
        return rows

    def first_served(self, tags: set[str], since: float) -> tuple[int, float] | None:
        """The first trades one of `tags` got after `since`: (last id, when)."""
        with self._lock:
            hit = next((s for s in self.served if s[0] in tags and s[1] is not None and s[2] >= since), None)
        return None if hit is None else (int(hit[1]), hit[2])  # type: ignore[arg-type]

    def start(self) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                tag, _, rest = url.path.lstrip("/").partition("/")
                q = {k: v[-1] for k, v in parse_qs(url.query).items()}
                ok = rest == "api/v3/aggTrades" and q.get("symbol") == PAIR
                body = json.dumps(fake.page(tag, q)).encode() if ok else b'{"code":-1121}'
                self.send_response(200 if ok else 400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        threading.Thread(target=self._grow, daemon=True).start()
        self.growing.set()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()


# ---------------------------------------------------------------- database and models


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    import psycopg

    name = f"tickcast_bench_replicas_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(admin_url)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def publish_models(url: str, folder: Path) -> list[str]:
    """Two tiny CNNs, published to the database's registry, the first active."""
    from app.ml import training
    from app.ml.config import TrainConfig
    from app.services.pg_models import PgRegistry

    cfg = TrainConfig(arch="CNN", hidden_size=8, seq_len=16, num_epochs=1, num_threads=1, device="cpu")
    paths = [training.fit(synthetic.generate(2_500, seed=seed), cfg).save(folder) for seed in (5, 6)]
    registry = PgRegistry(folder / "cache", url)
    try:
        for p in paths:
            registry.publish(p)
        registry.activate(paths[0].stem)
    finally:
        registry.close()
    return [p.stem for p in paths]


# ---------------------------------------------------------------- replicas and load


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Replica:
    tag: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def ingesting(self) -> bool:
        rows = self.http.get("/markets").json()
        return any((m["exchange"], m["symbol"]) == MARKET and m["ingesting"] for m in rows)

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.http.close()


def start_replica(tmp: Path, tag: str, db: str, exchange: str, interval: float) -> Replica:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
    env.update(
        PYTHONPATH=str(ROOT),
        TICKCAST_PORT=str(port),
        TICKCAST_DATABASE_URL=db,
        TICKCAST_MODELS_DIR=str(tmp / tag / "models"),
        TICKCAST_MARKETS=json.dumps([":".join(MARKET)]),
        TICKCAST_SOURCE_URLS=json.dumps({"binance": f"{exchange}/{tag}"}),
        TICKCAST_PULL_INTERVAL_S=str(interval),
        TICKCAST_BOOTSTRAP="false",
        TICKCAST_DEVICE="cpu",
        TICKCAST_LOG_LEVEL="warning",
    )
    (tmp / tag).mkdir(parents=True)
    log = tmp / tag / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"],
            cwd=tmp / tag,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Replica(tag, port, proc, log)


def wait_until(what: str, cond: Callable[[], bool], timeout: float, step: float = 0.05) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if cond():
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(step)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


def predict_body(n: int = 64) -> bytes:
    t = synthetic.generate(n, seed=7)
    ticks = [
        {"time": float(a), "price": float(b), "amount": float(c)}
        for a, b, c in zip(t.time, t.price, t.amount, strict=True)
    ]
    return json.dumps({"ticks": ticks}, separators=(",", ":")).encode()


BODY = predict_body()
HEADERS = {"Content-Type": "application/json"}


class Load(threading.Thread):
    """/predict at a bounded rate on one replica: POST /predict and the market's GET in turn."""

    def __init__(self, replica: Replica, rate: float) -> None:
        super().__init__(daemon=True)
        self.replica, self.period = replica, 1.0 / rate
        self.requests, self.failed = 0, 0
        self.failures: list[str] = []
        self._stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.replica.http.base_url, timeout=10) as c:
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    if self.requests % 2:
                        r = c.get("/predict/binance/BTC-USD")
                    else:
                        r = c.post("/predict", content=BODY, headers=HEADERS)
                    bad = (
                        None
                        if r.status_code == 200
                        else f"{r.request.url.path} {r.status_code}: {r.text[:100]}"
                    )
                except httpx.HTTPError as e:
                    bad = f"{type(e).__name__}"
                if not self._stop.is_set():  # a request cut by the kill is not the survivors' failure
                    self.requests += 1
                    if bad is not None:
                        self.failed += 1
                        self.failures.append(bad)
                self._stop.wait(max(0.0, self.period - (time.monotonic() - t0)))

    def stop(self) -> None:
        self._stop.set()


# ---------------------------------------------------------------- the phases


def served_model(replica: Replica) -> str | None:
    r = replica.http.post("/predict", content=BODY, headers=HEADERS)
    return r.json().get("model_id") if r.status_code == 200 else None


def activations(replicas: list[Replica], models: list[str], n: int) -> tuple[list[float], list[str]]:
    """Seconds from each activation on the first replica until every other one serves the model."""
    source, others = replicas[0], replicas[1:]
    seconds: list[float] = []
    problems: list[str] = []
    for i in range(n):
        target = models[(i + 1) % len(models)]
        t0 = time.monotonic()
        r = source.http.post(f"/models/{target}/activate")
        if r.status_code != 200:
            problems.append(f"activate {target}: {r.status_code} {r.text[:100]}")
            continue
        pending = list(others)
        while pending and time.monotonic() - t0 < ACTIVATION_TIMEOUT_S:
            pending = [o for o in pending if served_model(o) != target]
            if pending:
                time.sleep(0.005)
        seconds.append(time.monotonic() - t0)
        if pending:
            problems.append(
                f"{target} not served by {[o.tag for o in pending]} in {ACTIVATION_TIMEOUT_S:g} s"
            )
        time.sleep(0.1)
    return seconds, problems


def failover(
    replicas: list[Replica], loads: dict[str, Load], ex: Exchange, store: Any
) -> tuple[Replica, float]:
    """kill -9 the leader; seconds until the first trade a survivor pulled is stored."""
    (leader,) = [r for r in replicas if r.ingesting()]
    survivors = {r.tag for r in replicas if r is not leader}
    loads[leader.tag].stop()
    killed = time.monotonic()
    os.kill(leader.proc.pid, signal.SIGKILL)
    pulled: list[tuple[int, float]] = []

    def stored() -> bool:
        if not pulled:
            first = ex.first_served(survivors, killed)
            if first is None:
                return False
            pulled.append(first)
        latest = store.latest(*MARKET, 1)
        return len(latest) > 0 and int(latest.trade_id[-1]) >= pulled[0][0]

    wait_until("a survivor's first pull stored", stored, 60, 0.005)
    return leader, time.monotonic() - killed


def ledger(ex: Exchange, store: Any) -> tuple[int, int, int]:
    """Stop the trades, wait for the store to hold the last one; (trades, lost, doubled)."""
    ex.growing.clear()
    total = ex.ids()
    wait_until("the store caught up", lambda: len(store.latest(*MARKET, 1)) > 0
               and int(store.latest(*MARKET, 1).trade_id[-1]) >= total - 1, 60, 0.1)  # fmt: skip
    ids = [int(t) for t in store.read(*MARKET).trade_id]
    distinct = set(ids)
    return total, total - len(distinct & set(range(total))), len(ids) - len(distinct)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# ---------------------------------------------------------------- main


def measure(args: argparse.Namespace, db: str, tmp: Path) -> dict[str, Any]:
    from app.market.backends import open_tick_store

    print("training two tiny models and publishing them ...", file=sys.stderr)
    models = publish_models(db, tmp / "trained")
    ex = Exchange(args.rate, history=args.history)
    url = ex.start()
    replicas = [start_replica(tmp, f"r{i}", db, url, args.interval) for i in range(args.replicas)]
    loads: dict[str, Load] = {}
    store = open_tick_store(db)
    try:
        for r in replicas:
            wait_until(f"{r.tag} ready", lambda r=r: r.http.get("/ready").status_code == 200, 180, 0.2)
        wait_until("one replica ingesting", lambda: sum(r.ingesting() for r in replicas) == 1, 30, 0.1)
        wait_until("the history stored", lambda: store.count(*MARKET) >= args.history, 60, 0.1)
        loads = {r.tag: Load(r, args.predict_rate) for r in replicas}
        for load in loads.values():
            load.start()
        print(f"{args.activations} activations ...", file=sys.stderr)
        seconds, problems = activations(replicas, models, args.activations)
        print("kill -9 of the ingesting replica ...", file=sys.stderr)
        killed, takeover = failover(replicas, loads, ex, store)
        time.sleep(args.after_kill)
        trades, lost, doubled = ledger(ex, store)
    except Exception:
        for r in replicas:
            print(f"--- {r.tag} ---\n{r.tail()}", file=sys.stderr)
        raise
    finally:
        for load in loads.values():
            load.stop()
        for r in replicas:
            r.stop()
        store.close()
        ex.stop()
    survivors = [load for tag, load in loads.items() if tag != killed.tag]
    return {
        "replicas": args.replicas,
        "pull_interval_s": args.interval,
        "trade_rate": args.rate,
        "trades": trades,
        "ticks_lost": lost,
        "ticks_doubled": doubled,
        "requests": sum(load.requests for load in survivors),
        "failed_requests": sum(load.failed for load in survivors),
        "failures": [f for load in survivors for f in load.failures][:5] + problems[:5],
        "killed_replica_requests": loads[killed.tag].requests,
        "takeover_s": round(takeover, 4),
        "activations": len(seconds),
        "activation_problems": len(problems),
        "activation_p50_s": round(percentile(seconds, 0.5), 4),
        "activation_p99_s": round(percentile(seconds, 0.99), 4),
        "activation_max_s": round(max(seconds, default=math.nan), 4),
    }


def verdicts(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    targets = {
        "ticks_lost": (res["ticks_lost"], 0, res["ticks_lost"] == 0),
        "ticks_doubled": (res["ticks_doubled"], 0, res["ticks_doubled"] == 0),
        "failed_requests": (res["failed_requests"], 0, res["failed_requests"] == 0),
        "takeover_s": (
            res["takeover_s"],
            2 * res["pull_interval_s"],
            res["takeover_s"] <= 2 * res["pull_interval_s"],
        ),
        "activation_p99_s": (
            res["activation_p99_s"],
            1.0,
            res["activation_p99_s"] <= 1.0 and res["activation_problems"] == 0,
        ),  # fmt: skip
    }
    return {k: {"value": v, "target": t, "met": bool(m)} for k, (v, t, m) in targets.items()}


def report(res: dict[str, Any]) -> None:
    print(
        f"\n{res['replicas']} replicas, pull interval {res['pull_interval_s']:g} s, "
        f"{res['trade_rate']:g} trades/s\n"
        f"trades {res['trades']}: {res['ticks_lost']} lost, {res['ticks_doubled']} doubled\n"
        f"takeover after kill -9 of the leader: {res['takeover_s']:.3f} s\n"
        f"/predict on the survivors: {res['requests']} requests, {res['failed_requests']} failed "
        f"({res['killed_replica_requests']} on the killed replica before it died)\n"
        f"activation propagation over {res['activations']}: p50 {res['activation_p50_s']:.3f} s, "
        f"p99 {res['activation_p99_s']:.3f} s, max {res['activation_max_s']:.3f} s"
    )
    for f in res["failures"]:
        print(f"  failure: {f}")
    print("\ntargets:")
    for name, v in res["targets"].items():
        print(f"  [{'ok' if v['met'] else 'MISS'}] {name}: {v['value']} (target {v['target']:g})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default=ADMIN_URL, help=f"PostgreSQL admin URL (default {ADMIN_URL})")
    ap.add_argument("--replicas", type=int, default=3, help="tickcast serve processes (default 3)")
    ap.add_argument("--interval", type=float, default=1.0, help="pull interval, seconds (default 1)")
    ap.add_argument("--rate", type=float, default=20.0, help="exchange trades per second (default 20)")
    ap.add_argument("--history", type=int, default=3_000, help="trades before the start (default 3000)")
    ap.add_argument("--predict-rate", type=float, default=5.0, help="requests/s per replica (default 5)")
    ap.add_argument("--activations", type=int, default=20, help="activations timed (default 20)")
    ap.add_argument(
        "--after-kill", type=float, default=5.0, help="seconds of load after the kill (default 5)"
    )
    ap.add_argument("--json", action="store_true", help="last line: the figures as one JSON object")
    args = ap.parse_args(argv)
    if args.replicas < 2:
        ap.error("--replicas must be at least 2: one is killed")
    with fresh_database(args.url) as db, tempfile.TemporaryDirectory(prefix="tickcast-replicas-") as d:
        res = measure(args, db, Path(d))
    res["targets"] = verdicts(res)
    report(res)
    if args.json:
        print(json.dumps(res))
    return 0 if all(v["met"] for v in res["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
