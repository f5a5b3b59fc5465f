"""scripts/dev.sh: which torch it installs where, and the commands it runs from where.

The real script runs against a fake venv (TICKCAST_VENV in a temporary folder) whose
`python` records its arguments and working directory: pip and `import torch` are
answered by the fake, so nothing is installed and the real .venv is never touched.
The CPU index probe is real: it asks a server on 127.0.0.1 that answers, a port that
is closed, or a socket that never answers. A fake `nvidia-smi` first on PATH decides
whether there is a GPU.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "scripts" / "dev.sh"
PIP = ["-m", "pip", "install", "-q", "--disable-pip-version-check"]
TICKCAST = ["-e", f"{ROOT}[dev,eval]"]  # the project itself, after torch

FAKE_PYTHON = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps({{"argv": args, "cwd": os.getcwd()}}) + "\\n")
if args[:2] == ["-c", "import torch"]:
    sys.exit(0 if os.environ.get("FAKE_TORCH") == "1" else 1)
if args[:2] == ["-m", "pip"]:
    sys.exit(int(os.environ.get("FAKE_PIP_RC", "0")))
if args[:1] == ["-"] or os.environ.get("FAKE_DELEGATE") == "1":  # the probe, or a real run
    os.execv({python!r}, [{python!r}, *args])
"""

FAKE_NVIDIA_SMI = """#!/bin/sh
[ "$FAKE_GPU" = 1 ] || exit 9
echo "GPU 0: NVIDIA Fake (UUID: GPU-0)"
"""

FAKE_TICKCAST = """#!/bin/sh
printf '%s\\n' "$(pwd)" "$*" > "$FAKE_LOG.tickcast"
"""


class Venv:
    """A venv-shaped folder: bin/python and bin/tickcast record what they are asked."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "venv" / "bin"
        self.bin.mkdir(parents=True)
        self.tools = root / "tools"
        self.tools.mkdir()
        self.log = root / "calls.jsonl"
        for path, text in (
            (self.bin / "python", FAKE_PYTHON.format(python=sys.executable)),
            (self.bin / "tickcast", FAKE_TICKCAST),
            (self.tools / "nvidia-smi", FAKE_NVIDIA_SMI),
        ):
            path.write_text(text)
            path.chmod(0o755)

    @property
    def stamp(self) -> Path:
        return self.root / "venv" / ".tickcast-setup"

    def set_up_already(self) -> None:
        self.stamp.touch()  # newer than pyproject.toml: setup has nothing to do

    def calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def pip_calls(self) -> list[list[str]]:
        return [c["argv"][len(PIP) :] for c in self.calls() if c["argv"][:2] == ["-m", "pip"]]

    def probed(self) -> bool:
        return any(c["argv"][:1] == ["-"] for c in self.calls())

    def run(
        self,
        *args: str,
        cwd: Path | None = None,
        index: str = "http://127.0.0.1:9",
        timeout: float = 60,
        **env: str,
    ) -> subprocess.CompletedProcess:
        mine = ("TICKCAST_TORCH", "TICKCAST_VENV", "TICKCAST_EXTRAS")  # CI sets the extras for its own venv
        full = {k: v for k, v in os.environ.items() if k not in mine}
        full.update(
            PATH=f"{self.tools}{os.pathsep}{os.environ['PATH']}",
            FAKE_LOG=str(self.log),
            TICKCAST_VENV=str(self.root / "venv"),
            TICKCAST_TORCH_INDEX=index,
            PYTHONWARNINGS="ignore",
            OMP_NUM_THREADS="1",
            **env,
        )
        return subprocess.run(
            ["bash", str(DEV), *args],
            cwd=cwd or self.root,
            env=full,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture
def venv(tmp_path: Path) -> Venv:
    return Venv(tmp_path)


class _Index(http.server.BaseHTTPRequestHandler):
    asked: list[str] = []

    def do_GET(self) -> None:
        type(self).asked.append(self.path)
        body = b"<html><body><a href='torch/'>torch</a></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def index() -> Iterator[tuple[str, list[str]]]:
    """A package index on 127.0.0.1 that answers: (its URL, the paths it was asked for)."""
    handler = type("Index", (_Index,), {"asked": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/whl/cpu", handler.asked
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/whl/cpu"


# ---------------------------------------------------------------- which torch


def test_no_gpu_and_the_cpu_index_answers_installs_torch_alone_from_it(venv: Venv, index) -> None:
    url, asked = index
    r = venv.run("setup", index=url)
    assert r.returncode == 0, r.stderr
    assert asked == ["/whl/cpu/"]  # the probe really asked the index
    assert venv.pip_calls() == [["--index-url", url, "torch==2.13.0"], TICKCAST]
    assert f"no NVIDIA GPU; installing the CPU build of torch==2.13.0 from {url}" in r.stderr
    assert venv.stamp.exists()


def test_no_gpu_and_the_index_unreachable_falls_back_to_the_pin_and_says_so(venv: Venv) -> None:
    url = closed_port_url()
    r = venv.run("setup", index=url)
    assert r.returncode == 0, r.stderr
    assert venv.probed()
    assert venv.pip_calls() == [["torch==2.13.0"], TICKCAST]
    line = next(ln for ln in r.stderr.splitlines() if ln.startswith("torch:"))
    assert f"{url} cannot be reached" in line and "refused" in line.lower()
    assert "falling back to torch==2.13.0 from the default index" in line


def test_an_index_that_never_answers_falls_back_instead_of_hanging(venv: Venv) -> None:
    with socket.socket() as s:  # accepts connections (the backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        url = f"http://127.0.0.1:{s.getsockname()[1]}/whl/cpu"
        r = venv.run("setup", index=url, timeout=30)
    assert r.returncode == 0, r.stderr
    assert venv.pip_calls() == [["torch==2.13.0"], TICKCAST]
    assert "cannot be reached" in r.stderr and "falling back" in r.stderr


def test_a_gpu_gets_the_default_index_cuda_build_without_probing(venv: Venv, index) -> None:
    url, asked = index
    r = venv.run("setup", index=url, FAKE_GPU="1")
    assert r.returncode == 0, r.stderr
    assert venv.pip_calls() == [["torch==2.13.0"], TICKCAST]
    assert not venv.probed() and asked == []
    assert "an NVIDIA GPU is present" in r.stderr and "CUDA build" in r.stderr


@pytest.mark.parametrize("gpu", ["0", "1"])
def test_tickcast_torch_overrides_everything(venv: Venv, index, gpu: str) -> None:
    url, asked = index
    spec = "torch==2.13.0+cu124"
    r = venv.run("setup", index=url, FAKE_GPU=gpu, TICKCAST_TORCH=spec)
    assert r.returncode == 0, r.stderr
    assert venv.pip_calls() == [[spec], TICKCAST]
    assert not venv.probed() and asked == []
    assert f"torch: installing {spec} (from TICKCAST_TORCH)" in r.stderr


def test_an_installed_torch_is_kept(venv: Venv, index) -> None:
    url, asked = index
    r = venv.run("setup", index=url, FAKE_TORCH="1", TICKCAST_TORCH="torch==9.9")
    assert r.returncode == 0, r.stderr
    assert venv.pip_calls() == [TICKCAST]
    assert not venv.probed() and "torch:" not in r.stderr


def test_tickcast_extras_chooses_the_extras(venv: Venv) -> None:
    """CI asks for dev,eval,ray (the Ray tests); a plain set-up installs dev,eval."""
    r = venv.run("setup", FAKE_TORCH="1", TICKCAST_EXTRAS="dev,eval,ray")
    assert r.returncode == 0, r.stderr
    assert venv.pip_calls()[-1] == ["-e", f"{ROOT}[dev,eval,ray]"]


def test_a_finished_setup_is_not_repeated(venv: Venv) -> None:
    venv.set_up_already()
    r = venv.run("setup")
    assert r.returncode == 0, r.stderr
    assert venv.calls() == []


def test_a_failed_install_says_what_to_do_and_leaves_no_stamp(venv: Venv, index) -> None:
    url, _ = index
    r = venv.run("setup", index=url, FAKE_PIP_RC="1")
    assert r.returncode == 1
    assert "could not install torch==2.13.0" in r.stderr and "TICKCAST_TORCH" in r.stderr
    assert len(venv.pip_calls()) == 1  # stopped at torch
    assert not venv.stamp.exists()


def test_the_pins_are_the_dockerfiles() -> None:
    dev, docker = DEV.read_text(), (ROOT / "Dockerfile").read_text()
    version = re.search(r"^ARG TORCH_VERSION=(\S+)", docker, re.M).group(1)
    index_url = re.search(r"^ARG TORCH_INDEX=(\S+)", docker, re.M).group(1)
    assert re.search(rf"^TORCH_VERSION={re.escape(version)}\s", dev, re.M)
    assert f"TICKCAST_TORCH_INDEX:-{index_url}}}" in dev
    # the Dockerfile installs torch alone from its index; so does dev.sh (no PyPI mixed in)
    assert '--index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"' in docker
    assert '--index-url "$CPU_INDEX" "torch==$TORCH_VERSION"' in dev
    assert "extra-index-url" not in dev


# ---------------------------------------------------------------- the commands


def dispatched() -> list[str]:
    """The commands dev.sh's dispatch accepts, read from the script itself."""
    block = DEV.read_text().rsplit('case "$cmd" in', 1)[1]
    return [m.split("|")[0] for m in re.findall(r"^    ([a-z|-]+)\)", block, re.M)]


def test_help_lists_every_command(venv: Venv) -> None:
    commands = dispatched()
    assert set(commands) == {"setup", "serve", "test", "train", "evaluate", "fetch", "help"}
    r = venv.run("help")
    assert r.returncode == 0 and r.stderr == ""
    listed = re.findall(r"^  ([a-z]+)\b", r.stdout, re.M)
    assert sorted(listed) == sorted(commands)
    assert venv.calls() == []  # help sets nothing up


def test_an_unknown_command_is_named_with_the_help_and_status_2(venv: Venv) -> None:
    r = venv.run("trian", "CNN", "x.csv")
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.splitlines()[0] == "unknown command: trian"
    assert "usage: scripts/dev.sh COMMAND" in r.stderr and "  train ARCH DATA" in r.stderr
    assert venv.calls() == []


@pytest.mark.parametrize(
    "command,script", [("train", "train.py"), ("evaluate", "evaluate.py"), ("fetch", "fetch_ticks.py")]
)
def test_file_commands_run_in_the_callers_directory(
    venv: Venv, tmp_path: Path, command: str, script: str
) -> None:
    venv.set_up_already()
    caller = tmp_path / "elsewhere"
    caller.mkdir()
    r = venv.run(command, "CNN", "ticks20k.csv", "--out", "models", cwd=caller)
    assert r.returncode == 0, r.stderr
    (call,) = venv.calls()
    assert call["argv"] == [str(ROOT / "scripts" / script), "CNN", "ticks20k.csv", "--out", "models"]
    assert call["cwd"] == str(caller)


def test_serve_and_test_run_in_the_repository(venv: Venv, tmp_path: Path) -> None:
    venv.set_up_already()
    r = venv.run("test", "-q", "tests/test_readme.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (call,) = venv.calls()
    # the coverage options first, then the caller's arguments as they are
    argv = ["-m", "pytest", "--cov", "--cov-report=term", "-q", "tests/test_readme.py"]
    assert call == {"argv": argv, "cwd": str(ROOT)}
    r = venv.run("serve", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert Path(f"{venv.log}.tickcast").read_text().splitlines() == [str(ROOT), "serve"]


def test_train_from_another_directory_for_real(venv: Venv, tmp_path: Path) -> None:
    """The newcomer's case: a CSV beside them, dev.sh called by its path from there."""
    from app.market.sources import synthetic
    from app.market.ticks import write_csv

    venv.set_up_already()
    caller = tmp_path / "work"
    caller.mkdir()
    write_csv(synthetic.generate(2000, seed=2), caller / "ticks20k.csv")
    fast = [
        "--num_epochs",
        "1",
        "--sequence_length",
        "8",
        "--hidden_size",
        "4",
        "--num_layers",
        "1",
        "--num_workers",
        "1",
        "--quiet",
    ]
    r = venv.run("train", "CNN", "ticks20k.csv", *fast, cwd=caller, timeout=300, FAKE_DELEGATE="1")
    assert r.returncode == 0, r.stderr
    assert len(list((caller / "models").glob("cnn-*.pt"))) == 1  # --out models is the caller's too

    r = venv.run("train", "CNN", "missing.csv", *fast, cwd=caller, timeout=300, FAKE_DELEGATE="1")
    assert r.returncode == 2
    assert f"no such CSV file: {caller / 'missing.csv'} (resolved from missing.csv in {caller})" in r.stderr
    assert "Traceback" not in r.stderr
