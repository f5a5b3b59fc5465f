#!/usr/bin/env python
"""Ingestion speed end to end, and what ingestion costs /predict.

A fake Binance (`/api/v3/aggTrades`, pages of 1,000 by `fromId`) runs in its
own process on 127.0.0.1, serving pre-serialised pages of N trades, so the
exchange side is never the bottleneck. Measured, side by side in one run:

  ticks_per_s   the real BinanceSource + pull() into a fresh SQLite store
                (HTTP, parsing, validation, idempotent insert + cursor, per page);
  repull_s      a second pull of the same market: resumes from the cursor (one
                request, nothing stored), so it costs O(new ticks), not O(range);
  repull_full_s the whole range pulled again with the cursor reset: every tick is
                a duplicate and none is stored twice (the store's idempotency cost);
  predict p99   of `POST /predict` at 1 connection (wrk), with the service idle,
                then with the service's own scheduler pulling the fake exchange.

    python scripts/bench_ingest.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

T0_MS = int((time.time() - 6 * 3600) * 1000)


def fake_exchange_app(n: int, limit: int = 1000):
    """A pre-rendered aggTrades market: page k holds trades fromId .. fromId+limit-1."""
    first = 1_000_000
    trades = [
        {
            "a": first + i,
            "p": f"{60000 + (i * 7919 % 400) / 100:.2f}",
            "q": f"{0.001 + (i % 97) / 1000:.6f}",
            "f": i,
            "l": i,
            "T": T0_MS + i * 50,
            "m": bool(i % 3),
            "M": True,
        }
        for i in range(n)
    ]
    pages: dict[int, bytes] = {}

    def page(from_id: int) -> bytes:
        k = max(0, from_id - first)
        if k not in pages:
            pages[k] = json.dumps(trades[k : k + limit]).encode()
        return pages[k]

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
        if "fromId" in query:
            body = page(int(query["fromId"]))
        elif "startTime" in query:
            body = page(first)
        else:
            body = json.dumps(trades[-limit:]).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def serve_fake(port: int, n: int) -> None:
    import uvicorn

    uvicorn.run(fake_exchange_app(n), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def start_fake(n: int) -> tuple[subprocess.Popen[bytes], str]:
    from bench_predict import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-fake", str(port), str(n)], start_new_session=True
    )
    import httpx

    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/api/v3/aggTrades?symbol=BTCUSDT&fromId=1000000", timeout=1)
            return proc, url
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)


async def pull_once(db: Path, url: str) -> tuple[int, float]:
    from app.market.sources.binance import BinanceSource
    from app.market.store import TickStore
    from app.services.ingestion.pull import pull

    with TickStore(db) as store:
        src = BinanceSource(url, min_interval_s=0.0)
        try:
            t0 = time.perf_counter()
            r = await pull(store, src, "binance", "BTC-USD", start=T0_MS / 1000)
            return r.new_ticks, time.perf_counter() - t0
        finally:
            await src.aclose()


def reset_cursor(db: Path) -> None:
    import sqlite3

    with sqlite3.connect(db) as c:
        c.execute("DELETE FROM cursors")


def predict_p99(url: str, models: Path, tmp: Path, ingest: bool, seconds: float) -> float:
    from bench_predict import Server, make_body, run_wrk, write_lua

    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
    env.update(
        TICKCAST_MODELS_DIR=str(models),
        TICKCAST_STORE_PATH=str(tmp / f"svc-{ingest}.db"),
        TICKCAST_BOOTSTRAP="false",
        TICKCAST_DEVICE="cpu",
        TICKCAST_LOG_LEVEL="warning",
        TICKCAST_MARKETS='["binance:BTC-USD"]',
        TICKCAST_SOURCE_URLS=json.dumps({"binance": url}),
        TICKCAST_INGEST="true" if ingest else "false",
        TICKCAST_PULL_INTERVAL_S="0.5",
    )
    body = make_body(100)
    server = Server("service", "app.main:create_app", env, tmp / f"svc-{ingest}.log", None)
    server.start()
    try:
        server.wait_ready(body)
        lua = tmp / "predict.lua"
        write_lua(lua, body)
        p99 = run_wrk(server.url, lua, 1, 1, seconds, None).p99_ms
        if ingest:
            from app.market.store import TickStore

            with TickStore(tmp / f"svc-{ingest}.db") as store:
                print(
                    f"the service ingested {store.count('binance', 'BTC-USD'):,} ticks "
                    "while /predict was measured"
                )
        return p99
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ticks", type=int, default=300_000, help="trades the fake exchange holds")
    ap.add_argument("--seconds", type=float, default=6.0, help="wrk seconds per /predict run")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--serve-fake", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_fake:
        serve_fake(*args.serve_fake)
        return 0
    from bench_predict import install_model

    fake, url = start_fake(args.ticks)
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            db = tmp / "ingest.db"
            new, secs = asyncio.run(pull_once(db, url))
            again, repull = asyncio.run(pull_once(db, url))
            reset_cursor(db)
            dup, repull_full = asyncio.run(pull_once(db, url))
            print(f"pull of {new:,} ticks: {secs:.2f} s = {new / secs:,.0f} ticks/s end to end")
            print(f"second pull (from the cursor): {again} new in {repull * 1000:.1f} ms")
            print(f"whole range again (cursor reset): {dup} new in {repull_full:.2f} s")
            models = tmp / "models"
            install_model(models, None, 20_000, 1)
            idle = predict_p99(url, models, tmp, False, args.seconds)
            busy = predict_p99(url, models, tmp, True, args.seconds)
            print(
                f"/predict p99 at 1 connection: idle {idle:.2f} ms, while ingesting {busy:.2f} ms "
                f"({busy / idle:.2f}x)"
            )
    finally:
        fake.kill()
        fake.wait()
    out = {
        "ticks_per_s": round(new / secs, 1),
        "repull_s": round(repull, 4),
        "repull_full_s": round(repull_full, 3),
        "predict_p99_idle_ms": idle,
        "predict_p99_ingest_ms": busy,
    }
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
