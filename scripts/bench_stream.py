#!/usr/bin/env python
"""What open dashboards cost: /stream fan-out next to /predict.

The service runs under uvicorn with the default CNN and a store of synthetic
ticks. Another process (this one) appends ticks to the store at a steady rate,
as the ingestion worker does, while N clients hold `GET /stream/...` open.
Measured, side by side in one run:

  first_backlog_ms  the first client's wait for `reset` + the backlog (the feed
                    reads and scores its ring: 1000 ticks);
  delivered         ticks each client received vs ticks written (nothing lost,
                    nothing twice), and the write-to-receive latency (bounded
                    by TICKCAST_STREAM_POLL_S, as the writer does not notify);
  predict p50/p99   `POST /predict` at 1 connection (wrk), idle and then with the
                    streams open and ticks flowing.

    python scripts/bench_stream.py --clients 20 --rate 20 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_predict import Server, install_model, make_body, run_wrk, write_lua

from app.market.sources import synthetic
from app.market.store import TickStore
from app.market.ticks import TickArrays

MARKET = ("synthetic", "BTC-USD")


class Client(threading.Thread):
    """One EventSource-like reader: counts tick events and when each arrived."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.arrivals: dict[float, float] = {}  # tick time -> receive time
        self.first_backlog_s: float | None = None
        self.backlog = 0
        self.stop = threading.Event()

    def run(self) -> None:
        t0 = time.perf_counter()
        with httpx.Client(timeout=30) as c, c.stream("GET", self.url) as r:
            event, data = "", ""
            for line in r.iter_lines():
                if self.stop.is_set():
                    return
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data = line[5:].strip()
                elif line == "" and event == "tick":
                    t = json.loads(data)["time"]
                    self.arrivals[t] = time.perf_counter()
                    if self.first_backlog_s is None and len(self.arrivals) == self.backlog:
                        self.first_backlog_s = time.perf_counter() - t0


def writer(db: Path, ticks: TickArrays, rate: float, seconds: float, written: dict[float, float]) -> None:
    """Appends ticks at `rate` per second, in batches of 5, as an ingestion worker would."""
    with TickStore(db) as store:
        i, t_end = 0, time.perf_counter() + seconds
        while time.perf_counter() < t_end and i + 5 <= len(ticks):
            batch = ticks[i : i + 5]
            store.insert(*MARKET, batch)
            now = time.perf_counter()
            for t in batch.time.tolist():
                written[t] = now
            i += 5
            time.sleep(5 / rate)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--rate", type=float, default=20.0, help="ticks written per second")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--poll-s", type=float, default=0.25, help="TICKCAST_STREAM_POLL_S")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        models = tmp / "models"
        models.mkdir()
        print("training the default CNN for the service ...", file=sys.stderr)
        install_model(models, None, 20_000, 1)
        # distinct times, so each tick is recognisable on the wire
        n_live = int(args.rate * args.seconds) + 50
        ticks = synthetic.generate(20_000 + n_live, seed=3)
        ticks.time[:] = 1_700_000_000.0 + 0.5 * np.arange(len(ticks))
        db = tmp / "store.db"
        with TickStore(db) as store:
            store.insert(*MARKET, ticks[:20_000])
        env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
        env.update(
            TICKCAST_MODELS_DIR=str(models),
            TICKCAST_STORE_PATH=str(db),
            TICKCAST_DEVICE="cpu",
            TICKCAST_BOOTSTRAP="false",
            TICKCAST_INGEST="false",
            TICKCAST_LOG_LEVEL="warning",
            TICKCAST_STREAM_POLL_S=str(args.poll_s),
        )
        body = make_body(100)
        server = Server("service", "app.main:create_app", env, tmp / "svc.log", None)
        server.start()
        try:
            server.wait_ready(body)
            base = server.url.removesuffix("/predict")
            lua = tmp / "predict.lua"
            write_lua(lua, body)
            idle = run_wrk(server.url, lua, 1, 1, args.seconds, None)

            stream_url = f"{base}/stream/{MARKET[0]}/{MARKET[1]}?backlog=1000"
            clients = [Client(stream_url) for _ in range(args.clients)]
            for c in clients:
                c.backlog = 1000
            clients[0].start()
            deadline = time.monotonic() + 60
            while clients[0].first_backlog_s is None and time.monotonic() < deadline:
                time.sleep(0.01)
            for c in clients[1:]:
                c.start()
            while any(len(c.arrivals) < 1000 for c in clients) and time.monotonic() < deadline:
                time.sleep(0.05)

            written: dict[float, float] = {}
            w = threading.Thread(target=writer, args=(db, ticks[20_000:], args.rate, args.seconds, written))
            w.start()
            busy = run_wrk(server.url, lua, 1, 1, args.seconds, None)
            w.join()
            time.sleep(max(1.0, 4 * args.poll_s))  # the last poll
            for c in clients:
                c.stop.set()
        finally:
            server.stop()

    live = set(written)
    got = [len(live & set(c.arrivals)) for c in clients]
    lat = [(c.arrivals[t] - written[t]) * 1000 for c in clients for t in live & set(c.arrivals)]
    out = {
        "clients": args.clients,
        "ticks_written": len(live),
        "poll_s": args.poll_s,
        "first_backlog_ms": round((clients[0].first_backlog_s or float("nan")) * 1000, 1),
        "delivered_min": min(got),
        "delivered_max": max(got),
        "latency_p50_ms": round(statistics.median(lat), 1) if lat else None,
        "latency_p99_ms": round(sorted(lat)[int(0.99 * (len(lat) - 1))], 1) if lat else None,
        "predict_idle_p50_ms": idle.p50_ms,
        "predict_idle_p99_ms": idle.p99_ms,
        "predict_streaming_p50_ms": busy.p50_ms,
        "predict_streaming_p99_ms": busy.p99_ms,
    }
    out["predict_p99_ratio"] = round(busy.p99_ms / idle.p99_ms, 2)
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:26s} {v}")
    return 0 if out["delivered_min"] == len(live) else 1


if __name__ == "__main__":
    raise SystemExit(main())
