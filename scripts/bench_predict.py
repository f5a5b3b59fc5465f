#!/usr/bin/env python
"""`POST /predict` under load, beside the framework's ceiling and a naive endpoint.

Trains the default CNN for one epoch on synthetic ticks (or takes `--model
FILE.pt`) into a temporary models folder, then starts three servers one after
another, each its own uvicorn process with one worker on a free 127.0.0.1 port,
the same event loop and HTTP parser for all three, no access log:

  service  `app.main:create_app` (middleware, micro-batching, metrics), no bootstrap, CPU;
  bare     `bench_apps:bare_app`: `async def` that parses the body with the same
           `PredictRequest` and returns a constant (the framework's ceiling);
  naive    `bench_apps:naive_app`: `def` that parses the body and runs `Model.predict`
           per request (features + one forward pass of batch 1), no batching.

Each must answer the body (100 synthetic ticks by default) with 200 before it
is loaded with wrk (Lua script: POST, the JSON body, content-type): a short
warm-up, then `-t1 -c1 -d5s --latency` (p50/p99 at one connection), then
`-t2 -c64 -d8s --latency` (throughput and p99 at 64). Only one server runs at a
time. The service's resident memory (VmRSS of its uvicorn process) is read
after its load.

Pinning: on a 2-core machine wrk and the server compete for the CPU, and an
unpinned run lets the scheduler put wrk's threads on the server's core. By
default the server runs under `taskset -c 0` and wrk under `taskset -c 1`: the
server gets one whole core (which is all one uvicorn worker can use: the loop
is one thread and the service scores with 1 torch thread), and wrk has a core
of its own, which it needs only a fraction of at these rates, so the load
generator is not the bottleneck. `--no-pin` runs both unpinned. Pinning the
naive app to one core also keeps its thread-pool requests from borrowing
wrk's core, so all three are compared on one core each.

`--during-training` measures the service alone, idle and then while a GRU job
trains in its worker process (started with POST /train, cancelled at the end),
in the same run: p50/p99 at 1 connection, throughput and p99 at 16. Here the
server is not pinned, as in a deployment: a pinned server's job worker would
inherit its single core, where it yields to serving so completely that it
does not train at all under load. wrk stays on core 1 (unless --no-pin), and
the worker keeps off the first core by itself (job_worker.yield_cpu). The
batches the job trained during the load are reported too. Targets: p99 while
training <= 1.5x idle at 1 connection and <= 2x at 16, throughput at 16 while
training >= 70% of idle.

    python scripts/bench_predict.py              # table and targets
    python scripts/bench_predict.py --json       # ... last line: one JSON object
    python scripts/bench_predict.py --model models/cnn-....pt --duration 15
    python scripts/bench_predict.py --during-training --json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.market.sources import synthetic  # noqa: E402

WRK = shutil.which("wrk") or "/usr/bin/wrk"
TARGETS = {"p50_ms_c1": 2.0, "rps_vs_bare": 0.7, "rps_vs_naive": 2.0, "p99_vs_bare": 2.0, "rss_mb": 600.0}
TRAINING_TARGETS = {"p99_c1_ratio": 1.5, "p99_c16_ratio": 2.0, "rps_c16_ratio": 0.7}
TRAINING_CONNECTIONS = 16
# long enough to outlast the measurements; cancelled when they are done
GRU_JOB = {"config": {"arch": "GRU", "num_epochs": 1000, "patience": 0}, "activate": "never"}


# ---------------------------------------------------------------- model and body


def train_model(folder: Path, n_ticks: int, epochs: int) -> str:
    """The default CNN (TrainConfig defaults) fit on synthetic ticks; returns its id."""
    from app.ml import training

    ticks = synthetic.generate(n_ticks, seed=1)
    cfg = training.TrainConfig(num_epochs=epochs, device="cpu", num_threads=2)
    result = training.fit(ticks, cfg)
    return result.save(folder).stem


def install_model(folder: Path, model: str | None, n_ticks: int, epochs: int) -> tuple[str, Path]:
    from app.services.registry import Registry

    if model:
        src = Path(model)
        if not src.is_file():
            sys.exit(f"--model {model}: no such file")
        shutil.copy2(src, folder / src.name)
        model_id = src.stem
    else:
        model_id = train_model(folder, n_ticks, epochs)
    Registry(folder).activate(model_id)
    return model_id, folder / f"{model_id}.pt"


def make_body(n: int) -> bytes:
    t = synthetic.generate(n, seed=7)
    ticks = [
        {"time": float(a), "price": float(b), "amount": float(c)}
        for a, b, c in zip(t.time, t.price, t.amount, strict=True)
    ]
    return json.dumps({"ticks": ticks}, separators=(",", ":")).encode()


# ---------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loop_and_http() -> tuple[str, str]:
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    try:
        import httptools  # noqa: F401

        http = "httptools"
    except ImportError:
        http = "h11"
    return loop, http


@dataclass
class Server:
    name: str
    target: str  # uvicorn import string of a factory
    env: dict[str, str]
    log: Path
    pin: str | None
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/predict"

    def start(self) -> None:
        self.port = free_port()
        loop, http = loop_and_http()
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            self.target,
            "--factory",
            "--app-dir",
            str(ROOT / "scripts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--loop",
            loop,
            "--http",
            http,
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        if self.pin is not None:
            cmd = ["taskset", "-c", self.pin, *cmd]  # taskset execs: the pid is uvicorn's
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, body: bytes, timeout: float = 120.0) -> None:
        """Until POST /predict answers 200 (the check that the body is served, too)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            req = urllib.request.Request(
                self.url, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    if r.status == 200:
                        json.loads(r.read())
                        return
                    last = f"status {r.status}"
            except urllib.error.HTTPError as e:
                last = f"status {e.code}: {e.read()[:300]!r}"
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                last = str(e)
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer 200 within {timeout:.0f}s ({last}):\n{self.tail()}")

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        raise RuntimeError("VmRSS not found")

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)  # uvicorn: graceful shutdown, the lifespan's finally runs
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


# ---------------------------------------------------------------- wrk

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"cannot read wrk duration {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    bad: int  # non-2xx/3xx responses plus socket errors
    raw: str = field(repr=False, default="")


def parse_wrk(out: str) -> WrkResult:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s*50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s*99%\s+(\S+)", out, re.M)
    reqs = re.search(r"(\d+) requests in", out)
    if not (rps and p50 and p99 and reqs):
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    bad = sum(int(x) for x in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", out))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        bad += sum(int(x) for x in sock.groups())
    return WrkResult(float(rps.group(1)), _ms(p50.group(1)), _ms(p99.group(1)), int(reqs.group(1)), bad, out)


def write_lua(path: Path, body: bytes) -> None:
    text = body.decode()
    eq = "=" * 3
    assert f"]{eq}]" not in text
    path.write_text(
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [{eq}[{text}]{eq}]\n"
    )


def run_wrk(url: str, lua: Path, threads: int, conns: int, seconds: float, pin: str | None) -> WrkResult:
    cmd = [
        WRK,
        f"-t{threads}",
        f"-c{conns}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(lua),
        url,
    ]
    if pin is not None:
        cmd = ["taskset", "-c", pin, *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    return parse_wrk(out.stdout)


# ---------------------------------------------------------------- while a job trains


def api(base: str, method: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        base + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def start_training(base: str, timeout: float = 120.0) -> str:
    """POST /train a GRU job and wait until its worker is past loading data, into training."""
    job = api(base, "POST", "/train", GRU_JOB)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        j = api(base, "GET", f"/jobs/{job['id']}")
        if j["status"] not in ("queued", "running"):
            raise RuntimeError(f"the training job ended before the measurement: {j}")
        if j["status"] == "running" and (j.get("progress") or {}).get("phase") == "training":
            return job["id"]
        time.sleep(0.2)
    raise RuntimeError(f"the training job did not start training within {timeout:.0f}s")


def measure(url: str, lua: Path, args: argparse.Namespace, pin: str | None) -> dict[str, WrkResult]:
    return {
        "c1": run_wrk(url, lua, 1, 1, args.duration_c1, pin),
        "c16": run_wrk(url, lua, args.threads, TRAINING_CONNECTIONS, args.duration, pin),
    }


def during_training(
    args: argparse.Namespace, server: Server, body: bytes, lua: Path, pin_wrk: str | None
) -> dict[str, dict[str, WrkResult]]:
    """The service idle, then while a job trains: the same load, in the same run."""
    print("service: starting", file=sys.stderr)
    server.start()
    base = server.url.rsplit("/", 1)[0]
    server.wait_ready(body)
    if args.warmup > 0:
        run_wrk(server.url, lua, 1, 8, args.warmup, pin_wrk)
    idle = measure(server.url, lua, args, pin_wrk)
    print(f"idle: c1 p99 {idle['c1'].p99_ms:.2f} ms, c16 {idle['c16'].rps:.0f} req/s", file=sys.stderr)
    job_id = start_training(base)
    before = batches_done(api(base, "GET", f"/jobs/{job_id}"))
    print(f"job {job_id} training", file=sys.stderr)
    t0 = time.monotonic()
    busy = measure(server.url, lua, args, pin_wrk)
    seconds = time.monotonic() - t0
    j = api(base, "GET", f"/jobs/{job_id}")
    if j["status"] != "running":
        raise RuntimeError(f"the training job stopped during the measurement: {j}")
    print(
        f"training: c1 p99 {busy['c1'].p99_ms:.2f} ms, c16 {busy['c16'].rps:.0f} req/s; the job "
        f"trained {batches_done(j) - before} batches in those {seconds:.0f} s (it yields the CPU "
        "to serving, so it goes slower while serving is busy)",
        file=sys.stderr,
    )
    api(base, "DELETE", f"/jobs/{job_id}")
    return {"idle": idle, "training": busy}


def batches_done(job: dict) -> int:
    p = job.get("progress") or {}
    n = int(p.get("num_batches") or 0)
    return (int(p.get("epoch") or 1) - 1) * n + int(p.get("batch") or 0)


def report_training(res: dict[str, dict[str, WrkResult]], args: argparse.Namespace, pinned: bool) -> int:
    idle, busy = res["idle"], res["training"]
    print(
        f"\n/predict while a GRU job trains, body of {args.ticks} ticks; uvicorn 1 worker; "
        + ("server unpinned, wrk on core 1" if pinned else "unpinned")
    )
    print(f"{'':9} {'p50 c1':>9} {'p99 c1':>9} {'req/s c16':>10} {'p50 c16':>9} {'p99 c16':>9} {'errors':>7}")
    for name, r in res.items():
        print(
            f"{name:9} {r['c1'].p50_ms:7.2f}ms {r['c1'].p99_ms:7.2f}ms {r['c16'].rps:10.0f} "
            f"{r['c16'].p50_ms:7.2f}ms {r['c16'].p99_ms:7.2f}ms {r['c1'].bad + r['c16'].bad:7d}"
        )
    c1 = busy["c1"].p99_ms / idle["c1"].p99_ms
    c16 = busy["c16"].p99_ms / idle["c16"].p99_ms
    rps = busy["c16"].rps / idle["c16"].rps
    t = TRAINING_TARGETS
    for text, ok in (
        (
            f"p99 at 1 connection while training {c1:.2f}x idle <= {t['p99_c1_ratio']}x",
            c1 <= t["p99_c1_ratio"],
        ),
        (f"p99 at 16 while training {c16:.2f}x idle <= {t['p99_c16_ratio']}x", c16 <= t["p99_c16_ratio"]),
        (f"req/s at 16 while training {rps:.2f}x idle >= {t['rps_c16_ratio']}x", rps >= t["rps_c16_ratio"]),
    ):
        print(f"  [{'ok' if ok else 'MISS'}] {text}")
    bad = sum(r[k].bad for r in res.values() for k in ("c1", "c16"))
    if bad:
        print(f"  [MISS] the service answered {bad} requests with an error or a socket error")
    if args.json:
        print(
            json.dumps(
                {
                    "p50_ms_c1_idle": round(idle["c1"].p50_ms, 3),
                    "p50_ms_c1_training": round(busy["c1"].p50_ms, 3),
                    "p99_ms_c1_idle": round(idle["c1"].p99_ms, 3),
                    "p99_ms_c1_training": round(busy["c1"].p99_ms, 3),
                    "p99_ms_c16_idle": round(idle["c16"].p99_ms, 3),
                    "p99_ms_c16_training": round(busy["c16"].p99_ms, 3),
                    "rps_c16_idle": round(idle["c16"].rps, 1),
                    "rps_c16_training": round(busy["c16"].rps, 1),
                }
            )
        )
    return 0


# ---------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=8.0, help="seconds of load at 64 connections")
    ap.add_argument("--duration-c1", type=float, default=5.0, help="seconds at 1 connection")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up load per server")
    ap.add_argument("--connections", type=int, default=64, help="connections of the loaded run")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads of the loaded run")
    ap.add_argument("--ticks", type=int, default=100, help="ticks in the request body")
    ap.add_argument("--model", help="a checkpoint .pt to serve (default: train a default CNN)")
    ap.add_argument("--train-ticks", type=int, default=20_000, help="synthetic ticks to train on")
    ap.add_argument("--epochs", type=int, default=1, help="training epochs")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the server to core 0 and wrk to core 1")
    ap.add_argument("--json", action="store_true", help="last line: one JSON object")
    ap.add_argument(
        "--during-training",
        action="store_true",
        help="the service alone, idle and while a GRU job trains (16 connections)",
    )
    return ap


def load_each(
    servers: list[Server], args: argparse.Namespace, body: bytes, lua: Path, pin_wrk: str | None
) -> tuple[dict[str, dict[str, WrkResult]], float]:
    """One server at a time: ready, warm-up, then 1 and N connections; the service's RSS after."""
    res: dict[str, dict[str, WrkResult]] = {}
    rss = 0.0
    for s in servers:
        print(f"{s.name}: starting", file=sys.stderr)
        s.start()
        try:
            s.wait_ready(body)
            if args.warmup > 0:
                run_wrk(s.url, lua, 1, 8, args.warmup, pin_wrk)
            c1 = run_wrk(s.url, lua, 1, 1, args.duration_c1, pin_wrk)
            cn = run_wrk(s.url, lua, args.threads, args.connections, args.duration, pin_wrk)
            res[s.name] = {"c1": c1, "cn": cn}
            if s.name == "service":
                rss = s.rss_mb()
            print(
                f"{s.name}: c1 p50 {c1.p50_ms:.2f} ms, c{args.connections} {cn.rps:.0f} req/s",
                file=sys.stderr,
            )
        finally:
            s.stop()
    return res, rss


def report_load(
    res: dict[str, dict[str, WrkResult]],
    rss: float,
    args: argparse.Namespace,
    body_bytes: int,
    model_id: str,
    pinned: bool,
) -> int:
    """The table, the targets met or missed, and with --json the figures as one line."""
    svc, bare, naive = res["service"], res["bare"], res["naive"]
    c = args.connections
    loop, http = loop_and_http()
    print(
        f"\n/predict, body of {args.ticks} ticks ({body_bytes} bytes), model {model_id}; "
        f"uvicorn 1 worker, {loop} + {http}; " + ("server on core 0, wrk on core 1" if pinned else "unpinned")
    )
    print(
        f"{'':8} {'p50 c1':>9} {'p99 c1':>9} {'req/s c' + str(c):>12} {'p50 c' + str(c):>10} "
        f"{'p99 c' + str(c):>10} {'errors':>7}"
    )
    for name, r in res.items():
        print(
            f"{name:8} {r['c1'].p50_ms:7.2f}ms {r['c1'].p99_ms:7.2f}ms {r['cn'].rps:12.0f} "
            f"{r['cn'].p50_ms:8.2f}ms {r['cn'].p99_ms:8.2f}ms {r['c1'].bad + r['cn'].bad:7d}"
        )
    print(f"service RSS after load: {rss:.0f} MB")

    ratio_bare = svc["cn"].rps / bare["cn"].rps
    ratio_naive = svc["cn"].rps / naive["cn"].rps
    p99_ratio = svc["cn"].p99_ms / bare["cn"].p99_ms
    checks = [
        (
            f"p50 at 1 connection {svc['c1'].p50_ms:.2f} ms <= {TARGETS['p50_ms_c1']} ms",
            svc["c1"].p50_ms <= TARGETS["p50_ms_c1"],
        ),
        (
            f"req/s at {c}: {ratio_bare:.2f}x bare >= {TARGETS['rps_vs_bare']}x",
            ratio_bare >= TARGETS["rps_vs_bare"],
        ),
        (
            f"req/s at {c}: {ratio_naive:.2f}x naive >= {TARGETS['rps_vs_naive']}x",
            ratio_naive >= TARGETS["rps_vs_naive"],
        ),
        (
            f"p99 at {c}: {p99_ratio:.2f}x bare's <= {TARGETS['p99_vs_bare']}x",
            p99_ratio <= TARGETS["p99_vs_bare"],
        ),
        (f"RSS {rss:.0f} MB <= {TARGETS['rss_mb']:.0f} MB", rss <= TARGETS["rss_mb"]),
    ]
    for text, ok in checks:
        print(f"  [{'ok' if ok else 'MISS'}] {text}")
    bad = svc["c1"].bad + svc["cn"].bad
    if bad:
        print(f"  [MISS] the service answered {bad} requests with an error or a socket error")
    if args.json:
        print(
            json.dumps(
                {
                    "p50_ms_c1": round(svc["c1"].p50_ms, 3),
                    "p99_ms_c1": round(svc["c1"].p99_ms, 3),
                    "rps_c64": round(svc["cn"].rps, 1),
                    "p99_ms_c64": round(svc["cn"].p99_ms, 3),
                    "rps_bare_c64": round(bare["cn"].rps, 1),
                    "rps_naive_c64": round(naive["cn"].rps, 1),
                    "ratio_to_bare": round(ratio_bare, 3),
                    "ratio_to_naive": round(ratio_naive, 3),
                    "rss_mb": round(rss, 1),
                    "p99_ms_bare_c64": round(bare["cn"].p99_ms, 3),
                }
            )
        )
    return 0


def main() -> int:
    args = build_parser().parse_args()
    if not Path(WRK).exists():
        sys.exit("wrk not found (apt-get install wrk)")
    pin_server, pin_wrk = (None, None) if args.no_pin or (os.cpu_count() or 1) < 2 else ("0", "1")
    if args.during_training:
        pin_server = None  # its job worker would inherit the pin: see the module's docstring

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so that the finally below stops the servers

    signal.signal(signal.SIGTERM, on_term)
    tmp = Path(tempfile.mkdtemp(prefix="tickcast-bench-"))
    servers: list[Server] = []
    try:
        models = tmp / "models"
        models.mkdir()
        t0 = time.perf_counter()
        model_id, model_path = install_model(models, args.model, args.train_ticks, args.epochs)
        print(
            f"model {model_id} ({'given' if args.model else 'trained'} in {time.perf_counter() - t0:.1f}s)",
            file=sys.stderr,
        )
        body = make_body(args.ticks)
        lua = tmp / "post.lua"
        write_lua(lua, body)

        env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
        env.update(
            TICKCAST_MODELS_DIR=str(models),
            TICKCAST_STORE_PATH=str(tmp / "store.db"),
            TICKCAST_BOOTSTRAP="false",
            TICKCAST_DEVICE="cpu",
            TICKCAST_LOG_LEVEL="warning",
            BENCH_MODEL_PATH=str(model_path),
            PYTHONUNBUFFERED="1",
        )
        if args.during_training:  # the job trains on the synthetic market's 60,000 ticks
            env.update(TICKCAST_INGEST="false")
        servers = [
            Server("service", "app.main:create_app", env, tmp / "service.log", pin_server),
            Server("bare", "bench_apps:bare_app", env, tmp / "bare.log", pin_server),
            Server("naive", "bench_apps:naive_app", env, tmp / "naive.log", pin_server),
        ]
        if args.during_training:
            servers = servers[:1]
            try:
                phases = during_training(args, servers[0], body, lua, pin_wrk)
            except (RuntimeError, OSError) as e:  # OSError: urllib's errors, a refused connection
                print(f"{e}\n{servers[0].tail()}", file=sys.stderr)
                return 1
            finally:
                servers[0].stop()
            return report_training(phases, args, pin_wrk is not None)
        res, rss = load_each(servers, args, body, lua, pin_wrk)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    return report_load(res, rss, args, len(body), model_id, pin_server is not None)


if __name__ == "__main__":
    sys.exit(main())
