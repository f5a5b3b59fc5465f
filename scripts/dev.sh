#!/usr/bin/env bash
# The set-up and the everyday commands in one place, so a fresh clone needs nothing else
# (`scripts/dev.sh help` lists them).
#
# torch is installed once into the venv and then left alone (a build already there is kept):
#   TICKCAST_TORCH set   that pip requirement
#   an NVIDIA GPU        the pinned torch from the default index: its CUDA build
#   no GPU               the pinned torch's CPU build from the CPU index the Dockerfile uses,
#                        torch alone from that index as the Dockerfile does (it also serves
#                        torch's own dependencies); where that index does not answer within
#                        PROBE_S seconds, the pinned torch from the default index
# One line on stderr says which it chose.
# TICKCAST_VENV (default .venv, relative to the repository) and PYTHON (default python3)
# choose the venv and the interpreter that creates it; TICKCAST_TORCH_INDEX replaces the
# CPU index (a mirror). TICKCAST_EXTRAS (default dev,eval) names the extras installed with
# tickcast: dev,eval,ray adds Ray for the Ray job backend and its tests.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${TICKCAST_VENV:-.venv}
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
PY=${PYTHON:-python3}
TORCH_VERSION=2.13.0                                                  # = the Dockerfile's TORCH_VERSION
CPU_INDEX=${TICKCAST_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}  # = the Dockerfile's TORCH_INDEX
PROBE_S=5
EXTRAS=${TICKCAST_EXTRAS:-dev,eval}  # the extras installed with tickcast; CI adds ray

usage() {
    cat <<EOF
usage: scripts/dev.sh COMMAND [ARGS...]

Each command first sets up $VENV if it is missing or older than pyproject.toml.

  serve [ARGS]             start the service (tickcast serve), in the repository: its .env, data/, models/
  test [PYTEST ARGS]       run the test suite (pytest), in the repository: paths are relative to it;
                           prints the coverage of app/ and fails under its floor (pyproject.toml),
                           which only the whole suite reaches: add --no-cov to run a part of it
  train ARCH DATA [FLAGS]  train a model (scripts/train.py; 'train --help' explains every flag)
  evaluate CKPT... DATA    score models beside the baselines (scripts/evaluate.py)
  fetch EXCHANGE SYMBOL    backfill a market's trades into the store or a CSV (scripts/fetch_ticks.py)
  setup                    only set up $VENV
  help                     this text

train, evaluate and fetch run in the directory you call them from, as the tickcast command
does: file arguments, --out and --store are relative to it.
torch: the CPU build from $CPU_INDEX where there is no NVIDIA GPU (the default index's
build if that index cannot be reached), the CUDA build where there is one; TICKCAST_TORCH
(a pip requirement) overrides both; a torch already in $VENV is kept.
EOF
}

pip_install() {  # pip_install WHAT HINT ARGS...: a failure says what to do, not only pip's error
    local what=$1 hint=$2
    shift 2
    if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@"; then
        echo "could not install $what into $VENV (pip's error is above); $hint, then run" \
             "scripts/dev.sh setup again" >&2
        exit 1
    fi
}

has_gpu() {
    command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1
}

# Exit 0 when the index answers within PROBE_S seconds; otherwise print why and exit 1. The
# request runs in a thread the interpreter abandons, so a name lookup that hangs (which
# urllib's timeout does not cover) cannot hold the set-up either.
probe() {
    "$VENV/bin/python" - "$1" "$PROBE_S" <<'PY'
import os
import sys
import threading
import urllib.error
import urllib.request

url, limit = sys.argv[1].rstrip("/") + "/", float(sys.argv[2])
result: list[str] = []


def ask() -> None:
    try:
        urllib.request.urlopen(url, timeout=limit).close()  # a 2xx; an HTTP error raises
        result.append("")
    except urllib.error.HTTPError as e:
        result.append(f"HTTP {e.code} {e.reason}")
    except Exception as e:  # any failure means: use the fallback
        result.append(str(getattr(e, "reason", None) or e) or type(e).__name__)


t = threading.Thread(target=ask, daemon=True)
t.start()
t.join(limit + 1)
why = result[0] if result else f"no answer within {limit:g} s"
if why:
    print(why)
sys.stdout.flush()
os._exit(1 if why else 0)
PY
}

install_torch() {
    if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
        return  # the user's build (CUDA, ROCm, nightly...) stays
    fi
    local spec=${TICKCAST_TORCH:-} why
    local hint="check the network, or install torch into $VENV yourself or set TICKCAST_TORCH"
    if [ -n "$spec" ]; then
        echo "torch: installing $spec (from TICKCAST_TORCH)" >&2
        pip_install "$spec" "check the requirement in TICKCAST_TORCH" "$spec"
    elif has_gpu; then
        echo "torch: an NVIDIA GPU is present; installing torch==$TORCH_VERSION from the default" \
             "index (its CUDA build)" >&2
        pip_install "torch==$TORCH_VERSION" "$hint" "torch==$TORCH_VERSION"
    elif why=$(probe "$CPU_INDEX"); then
        echo "torch: no NVIDIA GPU; installing the CPU build of torch==$TORCH_VERSION from $CPU_INDEX" >&2
        pip_install "torch==$TORCH_VERSION" "$hint" --index-url "$CPU_INDEX" "torch==$TORCH_VERSION"
    else
        echo "torch: no NVIDIA GPU, but $CPU_INDEX cannot be reached ($why); falling back to" \
             "torch==$TORCH_VERSION from the default index, a CPU build only where pip finds one" \
             "(a local wheel, macOS, Windows), else the CUDA build (set TICKCAST_TORCH to choose)" >&2
        pip_install "torch==$TORCH_VERSION" "$hint" "torch==$TORCH_VERSION"
    fi
}

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        echo "creating $VENV" >&2
        "$PY" -m venv "$VENV"
    fi
    local stamp="$VENV/.tickcast-setup"
    if [ -f "$stamp" ] && [ "$stamp" -nt "$ROOT/pyproject.toml" ]; then
        return
    fi
    install_torch
    echo "installing tickcast and its dependencies into $VENV" >&2
    pip_install "tickcast" "check the network (pip reads the default index)" -e "$ROOT[$EXTRAS]"
    touch "$stamp"
}

cmd=${1:-help}
[ $# -gt 0 ] && shift
case "$cmd" in
    serve|test) cd "$ROOT" ;;  # the service's .env, data/ and models/, and the suite, are the repository's
esac
case "$cmd" in
    setup) setup ;;
    serve) setup; exec "$VENV/bin/tickcast" serve "$@" ;;
    # --cov takes an optional value: the next word must be an option, never a user's test path
    test) setup; exec "$VENV/bin/python" -m pytest --cov --cov-report=term "$@" ;;
    train) setup; exec "$VENV/bin/python" "$ROOT/scripts/train.py" "$@" ;;
    evaluate) setup; exec "$VENV/bin/python" "$ROOT/scripts/evaluate.py" "$@" ;;
    fetch) setup; exec "$VENV/bin/python" "$ROOT/scripts/fetch_ticks.py" "$@" ;;
    help|-h|--help) usage ;;
    *)
        echo "unknown command: $cmd" >&2
        usage >&2
        exit 2
        ;;
esac
