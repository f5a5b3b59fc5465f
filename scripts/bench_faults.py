#!/usr/bin/env python
"""Faults injected into a running service, under a bounded `/predict` load, side by side.

Starts a fake Binance (`/api/v3/aggTrades`, trades appended live at `--rate` per
second, consecutive ids) on 127.0.0.1, then the service (`app.main:create_app`,
its own uvicorn process, a small CNN active, that market pulled every
`--interval` s), and a thread that posts `/predict` at a bounded rate the whole
time. Then, one after another:

  ingest worker kill -9   the pool process that pulls the market
  job worker kill -9      a training job's process, with a second job queued behind it
  store locked            another connection holds an EXCLUSIVE lock longer than the
                          store's busy timeout while a job trains and pulls run (writes
                          really fail; root ignores file modes, so chmod proves nothing)
  stream burst            3x TICKCAST_STREAM_MAX_CLIENTS concurrent /stream connects
  job flood               `--jobs` POST /train at once with TICKCAST_JOB_QUEUE_MAX small

After each: the store against the exchange's truth (every trade id up to the
newest stored one present exactly once), and the time until the service is whole
again. One table: fault, /predict requests, 5xx (any request of the run), ticks
lost, ticks doubled, seconds to recover, and what was checked. Targets: 0, 0, 0,
recovery within one pull interval (for the store lock: after the lock is released).

    python scripts/bench_faults.py            # the table
    python scripts/bench_faults.py --json     # ... last line: totals as one JSON object
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_predict import free_port, install_model, make_body  # noqa: E402

SYMBOL = "BTCUSDT"


# ---------------------------------------------------------------- the exchange


class FakeBinance:
    """aggTrades with a growing truth: trade i has id i, so what is lost or doubled is countable."""

    def __init__(self, rate: float, history: int) -> None:
        self.rate = rate
        now_ms = int(time.time() * 1000)
        # the history lies in the last 30 minutes: the service's first pull asks from an hour ago
        self.trades: list[tuple[int, int, str, str, bool]] = [
            self._trade(i, now_ms - (history - i) * 900_000 // max(history, 1)) for i in range(history)
        ]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.port = free_port()

    @staticmethod
    def _trade(i: int, t_ms: int) -> tuple[int, int, str, str, bool]:
        price = 6000.0 + 5.0 * ((i * 7919) % 13 - 6) / 6 + (i % 97) * 0.01
        return i, t_ms, f"{price:.2f}", f"{0.01 + (i * 31 % 50) / 100:.4f}", bool(i % 3 == 0)

    def last_id(self) -> int:
        with self._lock:
            return self.trades[-1][0]

    def _grow(self) -> None:
        while not self._stop.wait(1.0 / self.rate):
            with self._lock:
                self.trades.append(self._trade(len(self.trades), int(time.time() * 1000)))

    def page(self, q: dict[str, str]) -> list[dict[str, Any]]:
        limit = min(int(q.get("limit", "500")), 1000)
        with self._lock:
            trades = list(self.trades)
        if "fromId" in q:
            rows = trades[int(q["fromId"]) :]
        else:
            lo, hi = int(q.get("startTime", 0)), int(q.get("endTime", 2**62))
            rows = [t for t in trades if lo <= t[1] <= hi]
        return [
            {"a": a, "p": p, "q": qty, "f": a, "l": a, "T": t, "m": m, "M": True}
            for a, t, p, qty, m in rows[:limit]
        ]

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                q = {k: v[-1] for k, v in parse_qs(url.query).items()}
                if url.path != "/api/v3/aggTrades" or q.get("symbol") != SYMBOL:
                    body, status = b'{"code":-1121,"msg":"Invalid symbol."}', 400
                else:
                    body, status = json.dumps(fake.page(q)).encode(), 200
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        threading.Thread(target=self._grow, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()


# ---------------------------------------------------------------- load and bookkeeping


@dataclass
class Counts:
    requests: int = 0
    server_errors: int = 0
    failures: list[str] = field(default_factory=list)


class Load(threading.Thread):
    """POST /predict at a bounded rate; counts land in the current phase's bucket."""

    def __init__(self, base: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.base, self.period = base, 1.0 / rate
        self.body = make_body(100)
        self.phase = Counts()
        self._stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as c:
            while not self._stop.is_set():
                t0 = time.monotonic()
                bucket = self.phase
                try:
                    r = c.post(
                        f"{self.base}/predict",
                        content=self.body,
                        headers={"Content-Type": "application/json"},
                    )
                    bucket.requests += 1
                    if r.status_code >= 500:
                        bucket.server_errors += 1
                        bucket.failures.append(f"/predict {r.status_code}: {r.text[:120]}")
                except httpx.HTTPError as e:
                    bucket.requests += 1
                    bucket.server_errors += 1
                    bucket.failures.append(f"/predict {type(e).__name__}")
                self._stop.wait(max(0.0, self.period - (time.monotonic() - t0)))

    def stop(self) -> None:
        self._stop.set()


def children(pid: int) -> set[int]:
    """Every descendant of `pid` (from /proc: no psutil needed)."""
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                parents[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for c, pp in parents.items():
            if pp == p and c not in out:
                out.add(c)
                todo.append(c)
    return out


def workers(pid: int) -> set[int]:
    """Spawned worker processes (ingest pool, jobs), not the multiprocessing resource tracker."""
    out = set()
    for c in children(pid):
        try:
            cmd = Path(f"/proc/{c}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"spawn_main" in cmd:
            out.add(c)
    return out


def wait_until(what: str, cond: Callable[[], bool], timeout: float, step: float = 0.05) -> float:
    """Seconds until `cond()` held; raises with `what` after `timeout`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if cond():
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(step)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


class Service:
    def __init__(
        self, tmp: Path, exchange_url: str, interval: float, stream_cap: int, queue_max: int
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.db = tmp / "store.db"
        self.models = tmp / "models"
        self.log = tmp / "service.log"
        self.env = {
            **os.environ,
            "TICKCAST_STORE_PATH": str(self.db),
            "TICKCAST_MODELS_DIR": str(self.models),
            "TICKCAST_MARKETS": '["binance:BTC-USD"]',
            "TICKCAST_SOURCE_URLS": json.dumps({"binance": exchange_url}),
            "TICKCAST_PULL_INTERVAL_S": str(interval),
            "TICKCAST_BOOTSTRAP": "false",
            "TICKCAST_STREAM_MAX_CLIENTS": str(stream_cap),
            "TICKCAST_JOB_QUEUE_MAX": str(queue_max),
            "TICKCAST_LOG_LEVEL": "warning",
        }
        self.env.pop("TICKCAST_API_KEY", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.base, timeout=10)

    def start(self) -> None:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "app.main:create_app",
                    "--factory",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until("the service's /ready", lambda: self.http.get("/ready").status_code == 200, 120, 0.2)

    def market(self) -> dict[str, Any]:
        return next(m for m in self.http.get("/markets").json() if m["exchange"] == "binance")

    def stored_ids(self) -> list[int]:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30) as db:
            return [
                int(r[0])
                for r in db.execute(
                    "SELECT t.trade_id FROM ticks t JOIN markets m ON m.id = t.market_id"
                    " WHERE m.exchange = 'binance'"
                )
            ]

    def train(self, epochs: int = 2) -> httpx.Response:
        return self.http.post(
            "/train",
            json={
                "exchange": "binance",
                "symbol": "BTC-USD",
                "activate": "never",
                "config": {"arch": "CNN", "num_epochs": epochs, "seq_len": 16, "patience": 100},
            },
        )

    def job(self, job_id: str) -> dict[str, Any]:
        return self.http.get(f"/jobs/{job_id}").json()

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.http.close()


# ---------------------------------------------------------------- the faults


@dataclass
class Row:
    fault: str
    requests: int = 0
    server_errors: int = 0
    lost: int = 0
    doubled: int = 0
    recover_s: float = float("nan")
    check: str = ""
    failures: list[str] = field(default_factory=list)


def pulled_after(svc: Service, t: float) -> Callable[[], bool]:
    """A pull that finished after `t` (wall clock) without an error."""

    def ok() -> bool:
        m = svc.market()
        return m["last_pull"] is not None and m["last_pull"] > t and m["last_error"] is None

    return ok


def ledger(svc: Service, ex: FakeBinance, row: Row, interval: float) -> None:
    """Catch up with the exchange, then compare the store with its truth."""
    target = ex.last_id()
    wait_until(
        "the store catching up with the exchange",
        lambda: max(svc.stored_ids(), default=-1) >= target,
        10 * interval + 30,
        0.2,
    )
    ids = svc.stored_ids()
    top = max(ids)
    row.doubled = len(ids) - len(set(ids))
    row.lost = (top + 1) - len(set(ids))


def kill_ingest_worker(svc: Service, row: Row, interval: float) -> None:
    assert svc.proc is not None
    wait_until("an ingest worker", lambda: bool(workers(svc.proc.pid)), 30)  # type: ignore[union-attr]
    (pid,) = workers(svc.proc.pid)
    t_kill = time.time()
    os.kill(pid, signal.SIGKILL)
    row.recover_s = wait_until("a good pull after the kill", pulled_after(svc, t_kill), 10 * interval + 30)
    m = svc.market()
    row.check = f"worker restarts seen in /metrics: {_metric(svc, 'tickcast_worker_restarts_total')}"
    if m["last_error"] is not None:
        row.failures.append(f"last_error still set: {m['last_error']}")


def kill_job_worker(svc: Service, row: Row, interval: float) -> None:
    assert svc.proc is not None
    before = workers(svc.proc.pid)
    a = svc.train(epochs=50).json()
    b = svc.train(epochs=1).json()
    wait_until("job A running", lambda: svc.job(a["id"])["status"] == "running", 60)
    wait_until("job A's worker", lambda: bool(workers(svc.proc.pid) - before), 30)  # type: ignore[union-attr]
    (pid,) = workers(svc.proc.pid) - before
    os.kill(pid, signal.SIGKILL)
    row.recover_s = wait_until(
        "job B running after A's worker died",
        lambda: svc.job(b["id"])["status"] in ("running", "succeeded"),
        30,
    )
    ja = svc.job(a["id"])
    wait_until("job B finished", lambda: svc.job(b["id"])["status"] not in ("queued", "running"), 180)
    jb = svc.job(b["id"])
    row.check = f"A {ja['status']} ({(ja['error'] or '')[:60]}); B {jb['status']}"
    if jb["status"] != "succeeded":
        row.failures.append(f"job B: {jb['error']}")
    if ja["status"] != "failed" or jb["status"] != "succeeded":
        row.failures.append(row.check)


def lock_store(svc: Service, row: Row, interval: float, seconds: float) -> None:
    job = svc.train(epochs=30).json()
    wait_until("the job running", lambda: svc.job(job["id"])["status"] == "running", 60)
    db = sqlite3.connect(svc.db, timeout=30, isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    time.sleep(seconds)
    db.execute("ROLLBACK")
    db.close()
    t_free = time.time()
    row.recover_s = wait_until("a good pull after the lock", pulled_after(svc, t_free), 10 * interval + 30)
    wait_until("the job finished", lambda: svc.job(job["id"])["status"] not in ("queued", "running"), 300)
    j = svc.job(job["id"])
    row.check = f"job under the lock: {j['status']}"
    if j["status"] != "succeeded":
        row.failures.append(f"job {j['status']}: {j['error']}")


def stream_burst(svc: Service, row: Row, cap: int) -> None:
    statuses: list[int] = []
    opened: list[tuple[httpx.Client, Any]] = []
    lock, go = threading.Lock(), threading.Event()

    def connect() -> None:
        c = httpx.Client(base_url=svc.base, timeout=30)
        go.wait()
        try:
            cm = c.stream("GET", "/stream/binance/BTC-USD", params={"backlog": 0})
            r = cm.__enter__()
            with lock:
                statuses.append(r.status_code)
                if r.status_code == 200:
                    opened.append((c, cm))
                    return
            cm.__exit__(None, None, None)
        except httpx.HTTPError:
            with lock:
                statuses.append(599)
        c.close()

    threads = [threading.Thread(target=connect) for _ in range(3 * cap)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(60)
    admitted = statuses.count(200)
    refused = statuses.count(503)
    for c, cm in opened:
        cm.__exit__(None, None, None)
        c.close()
    row.check = f"{admitted} admitted of {len(statuses)} (cap {cap}), {refused} refused with 503"
    if admitted != cap or admitted + refused != len(statuses):
        row.failures.append(row.check)

    def admits() -> bool:
        with svc.http.stream("GET", "/stream/binance/BTC-USD", params={"backlog": 0}) as r:
            return r.status_code == 200

    row.recover_s = wait_until("a stream admitted again", admits, 30)


def job_flood(svc: Service, row: Row, n: int, queue_max: int) -> None:
    codes: list[int] = []
    accepted: list[str] = []
    for _ in range(n):
        r = svc.train(epochs=1)
        codes.append(r.status_code)
        if r.status_code == 202:
            accepted.append(r.json()["id"])
        elif r.status_code == 429 and "retry-after" not in r.headers:
            row.failures.append("429 without Retry-After")
    row.check = f"{codes.count(202)} accepted, {codes.count(429)} refused with 429 (queue max {queue_max})"
    if set(codes) - {202, 429} or codes.count(202) > queue_max + 1:
        row.failures.append(f"{row.check}; other codes: {sorted(set(codes) - {202, 429})}")
    t0 = time.monotonic()
    for jid in accepted:
        svc.http.delete(f"/jobs/{jid}")
    wait_until(
        "the queue drained",
        lambda: all(svc.job(j)["status"] not in ("queued", "running") for j in accepted),
        120,
    )
    row.recover_s = time.monotonic() - t0
    r = svc.train(epochs=1)
    if r.status_code != 202:
        row.failures.append(f"a job after the flood: {r.status_code}")
    else:
        svc.http.delete(f"/jobs/{r.json()['id']}")


def _metric(svc: Service, name: str) -> str:
    lines = [ln for ln in svc.http.get("/metrics").text.splitlines() if ln.startswith(name)]
    return "; ".join(lines) or "absent"


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=20.0, help="exchange trades per second (default 20)")
    ap.add_argument("--interval", type=float, default=1.0, help="pull interval, seconds (default 1)")
    ap.add_argument("--predict-rate", type=float, default=40.0, help="/predict per second (default 40)")
    ap.add_argument("--stream-cap", type=int, default=20, help="TICKCAST_STREAM_MAX_CLIENTS (default 20)")
    ap.add_argument("--queue-max", type=int, default=4, help="TICKCAST_JOB_QUEUE_MAX (default 4)")
    ap.add_argument("--jobs", type=int, default=20, help="POST /train in the flood (default 20)")
    ap.add_argument(
        "--lock-s",
        type=float,
        default=8.0,
        help="how long the store stays locked (default 8: past its 5 s busy timeout)",
    )
    ap.add_argument("--json", action="store_true", help="last line: the totals as one JSON object")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="tickcast-faults-") as d:
        tmp = Path(d)
        (tmp / "models").mkdir()
        print("training a small model to serve ...", file=sys.stderr)
        install_model(tmp / "models", None, 6_000, 1)
        ex = FakeBinance(args.rate, history=3_000)
        ex.start()
        svc = Service(tmp, f"http://127.0.0.1:{ex.port}", args.interval, args.stream_cap, args.queue_max)
        rows: list[Row] = []
        load: Load | None = None
        try:
            svc.start()
            load = Load(svc.base, args.predict_rate)
            load.start()
            faults: list[tuple[str, Callable[[Row], None]]] = [
                ("ingest worker kill -9", lambda r: kill_ingest_worker(svc, r, args.interval)),
                ("job worker kill -9", lambda r: kill_job_worker(svc, r, args.interval)),
                (f"store locked {args.lock_s:g} s", lambda r: lock_store(svc, r, args.interval, args.lock_s)),
                ("stream burst", lambda r: stream_burst(svc, r, args.stream_cap)),
                ("job flood", lambda r: job_flood(svc, r, args.jobs, args.queue_max)),
            ]
            for name, inject in faults:
                print(f"fault: {name} ...", file=sys.stderr)
                row = Row(name)
                load.phase = Counts()
                try:
                    inject(row)
                    ledger(svc, ex, row, args.interval)
                except Exception as e:  # a fault the service did not survive is a result, not a crash
                    row.failures.append(f"{type(e).__name__}: {e}")
                time.sleep(0.5)
                row.requests, row.server_errors = load.phase.requests, load.phase.server_errors
                row.failures += load.phase.failures[:3]
                rows.append(row)
        finally:
            if load is not None:
                load.stop()
            svc.stop()
            ex.stop()
        if any(r.failures for r in rows):
            print("service log tail:\n" + svc.tail(), file=sys.stderr)

    print(f"\n{'fault':<24} {'/predict':>8} {'5xx':>5} {'lost':>5} {'doubled':>7} {'recover s':>9}  check")
    for r in rows:
        print(
            f"{r.fault:<24} {r.requests:>8} {r.server_errors:>5} {r.lost:>5} {r.doubled:>7} "
            f"{r.recover_s:>9.2f}  {r.check}"
        )
        for f in r.failures:
            print(f"{'':<24} FAILED: {f}")
    totals = {
        "requests": sum(r.requests for r in rows),
        "server_errors": sum(r.server_errors for r in rows),
        "ticks_lost": sum(r.lost for r in rows),
        "ticks_doubled": sum(r.doubled for r in rows),
        "max_recover_s": max((r.recover_s for r in rows if r.recover_s == r.recover_s), default=None),
        "pull_interval_s": args.interval,
        "failures": sum(len(r.failures) for r in rows),
    }
    print(
        f"\ntotals: {totals['requests']} /predict requests, {totals['server_errors']} 5xx, "
        f"{totals['ticks_lost']} ticks lost, {totals['ticks_doubled']} doubled, slowest recovery "
        f"{totals['max_recover_s'] or float('nan'):.2f} s (pull interval {args.interval:g} s), "
        f"{totals['failures']} failed checks"
    )
    if args.json:
        print(json.dumps(totals))
    return 1 if totals["failures"] or totals["server_errors"] or totals["ticks_lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
