"""Replicas of `tickcast serve` on one PostgreSQL database, and a Binance whose trades keep coming.

Each replica is a real process (`python -m app.cli serve`, its own session, so a kill -9 is a
real one) pointed at the exchange through a base URL of its own (`<exchange>/<tag>`), so the
exchange can tell which replica asked for what: the proof that exactly one pulls a market.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.fake_exchange import Request, Response
from tests.helpers.servers import answers, free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Served:
    """One answered request: who asked (the replica's tag), for what, and what it got."""

    tag: str
    pair: str
    from_id: int | None
    ids: tuple[int, ...]
    at: float  # time.monotonic() as the answer left: the ticks can be stored no earlier


class GrowingBinance:
    """aggTrades per pair with consecutive ids from 0, appended by the test (`add`) or live; the
    handler for a FakeExchange, serving `/<tag>/api/v3/aggTrades`."""

    def __init__(self, history: dict[str, int], *, limit: int = 1000) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self.trades: dict[str, list[dict[str, Any]]] = {p: [] for p in history}
        self.served: list[Served] = []
        now_ms = int(time.time() * 1000)
        for pair, n in history.items():  # the last ten minutes: a first pull's hour window has them
            for i in range(n):
                self._append(pair, now_ms - (n - i) * 600_000 // max(n, 1))

    def _append(self, pair: str, t_ms: int) -> int:
        rows = self.trades[pair]
        i = len(rows)
        price = 60_000.0 + ((i * 7919) % 200 - 100) * 0.5
        rows.append({"a": i, "p": f"{price:.2f}", "q": f"{0.001 + (i % 50) / 1000:.4f}", "f": i, "l": i,
                     "T": t_ms, "m": i % 3 == 0, "M": True})  # fmt: skip
        return i

    def add(self, pair: str, n: int = 1) -> list[int]:
        """n new trades now; their ids."""
        with self._lock:
            return [self._append(pair, int(time.time() * 1000)) for _ in range(n)]

    def ids(self, pair: str) -> list[int]:
        with self._lock:
            return [t["a"] for t in self.trades[pair]]

    def tags(self, pair: str | None = None, since: float = 0.0) -> set[str]:
        """The replicas that asked (for `pair`), after `since` (monotonic)."""
        with self._lock:
            return {s.tag for s in self.served if (pair is None or s.pair == pair) and s.at >= since}

    def first(self, tag: str, since: float) -> float | None:
        """When `tag` was first answered after `since` (monotonic), if it was."""
        with self._lock:
            return next((s.at for s in self.served if s.tag == tag and s.at >= since), None)

    def served_at(self, pair: str, trade_id: int) -> float | None:
        with self._lock:
            return next((s.at for s in self.served if s.pair == pair and trade_id in s.ids), None)

    def __call__(self, req: Request) -> Any:
        tag, _, rest = req.path.lstrip("/").partition("/")
        pair = req.query.get("symbol", "")
        if rest != "api/v3/aggTrades" or pair not in self.trades:
            return Response.json({"code": -1121, "msg": "Invalid symbol."}, 400)
        limit = min(int(req.query.get("limit", "500")), self.limit)
        with self._lock:
            rows = self.trades[pair]
            from_id = int(req.query["fromId"]) if "fromId" in req.query else None
            if from_id is not None:
                page = rows[from_id : from_id + limit]
            else:
                lo, hi = int(req.query.get("startTime", 0)), int(req.query.get("endTime", 2**62))
                page = [t for t in rows if lo <= t["T"] <= hi][:limit]
            self.served.append(Served(tag, pair, from_id, tuple(t["a"] for t in page), time.monotonic()))
        return page


class Replica:
    """One `tickcast serve` on the shared database; its log is its stdout, in its folder."""

    def __init__(
        self, tmp: Path, tag: str, db_url: str, exchange_url: str, markets: list[str], **env: str
    ) -> None:
        self.tag, self.port = tag, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = tmp / tag
        self.dir.mkdir(parents=True, exist_ok=True)
        base = {k: v for k, v in os.environ.items() if not k.upper().startswith("TICKCAST_")}
        base.update(
            PYTHONPATH=str(ROOT),
            TICKCAST_PORT=str(self.port),
            TICKCAST_DATABASE_URL=db_url,
            TICKCAST_BOOTSTRAP="false",
            TICKCAST_MODELS_DIR=str(self.dir / "models"),
            TICKCAST_DEVICE="cpu",
            TICKCAST_MARKETS=json.dumps(markets),
            TICKCAST_SOURCE_URLS=json.dumps({"binance": f"{exchange_url}/{tag}"}),
            TICKCAST_LOG_LEVEL="warning",
        )
        base.update(env)
        self.log = self.dir / "serve.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve"],
                env=base,
                cwd=self.dir,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not answers(self.url):
            assert self.proc.poll() is None, f"{self.tag} exited {self.proc.returncode}:\n{self.tail()}"
            assert time.monotonic() < deadline, f"{self.tag} did not answer:\n{self.tail()}"
            time.sleep(0.1)

    def market(self, exchange: str, symbol: str) -> dict[str, Any]:
        """The market's row of /markets (asked again after a 503: the database may be busy)."""
        for _ in range(20):
            r = httpx.get(f"{self.url}/markets", timeout=10)
            if r.status_code != 503:
                break
            time.sleep(0.1)
        assert r.status_code == 200, r.text
        return next(m for m in r.json() if (m["exchange"], m["symbol"]) == (exchange, symbol))

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def kill(self) -> None:
        """kill -9 of the server process alone (its ingest worker dies with it, as it would)."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        try:  # whatever it started (a worker that outlived it) goes too
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
