#!/usr/bin/env bash
# The set-up and the everyday commands in one place, so a fresh clone needs nothing else:
#   scripts/dev.sh serve                  set up .venv if needed, start the service (tickcast serve)
#   scripts/dev.sh test [pytest args]     set up .venv if needed, run the test suite
#   scripts/dev.sh train ARCH DATA ...    set up .venv if needed, run scripts/train.py
#   scripts/dev.sh setup                  only set up .venv
# torch: a GPU build is the user's choice (install it into the venv first, or set
# TICKCAST_TORCH to a pip requirement); with no NVIDIA GPU we pin the CPU build so an
# open range never pulls a multi-GB CUDA wheel onto a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${TICKCAST_VENV:-.venv}
PY=${PYTHON:-python3}

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        echo "creating $VENV" >&2
        "$PY" -m venv "$VENV"
    fi
    local stamp="$VENV/.tickcast-setup"
    if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
        return
    fi
    if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
        local spec=${TICKCAST_TORCH:-}
        if [ -z "$spec" ]; then
            if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
                spec="torch"          # a CUDA build from the registry
            else
                spec="torch==2.13.0"  # a CPU build
            fi
        fi
        echo "installing $spec" >&2
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$spec"
    fi
    echo "installing tickcast and its dependencies into $VENV" >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]'
    touch "$stamp"
}

cmd=${1:-help}
[ $# -gt 0 ] && shift
case "$cmd" in
    setup) setup ;;
    serve) setup; exec "$VENV/bin/tickcast" serve "$@" ;;
    test) setup; exec "$VENV/bin/python" -m pytest "$@" ;;
    train) setup; exec "$VENV/bin/python" scripts/train.py "$@" ;;
    evaluate) setup; exec "$VENV/bin/python" scripts/evaluate.py "$@" ;;
    *) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; [ "$cmd" = help ] ;;
esac
