"""Worker processes die with the process that started them, however it dies.

A spawned worker (ingestion pool, training job) outlived a kill -9 of the API
process by minutes, holding 100+ MB and the store open, because nothing tells
a child that its parent is gone. Two guards, either of which suffices:

- Linux: `prctl(PR_SET_PDEATHSIG, SIGKILL)`, so the kernel kills the child the
  moment the parent thread exits;
- everywhere: a daemon thread that sees the parent pid change (the child is
  re-parented to init or a subreaper) within `poll_s` and exits hard.

Both are armed from inside the child, first thing, before any heavy import.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
POLL_S = 0.5


def _pdeathsig() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        rc: int = libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        return rc == 0
    except (OSError, AttributeError):
        return False


def arm(parent_pid: int | None = None, *, poll_s: float = POLL_S) -> None:
    """Make this process exit when `parent_pid` (default: the current parent) is gone.

    Call it in the child. Passing the pid the parent recorded before spawning
    closes the race where the parent died before the child got here.
    """
    expected = parent_pid if parent_pid is not None else os.getppid()
    _pdeathsig()
    if os.getppid() != expected:  # the parent is already gone
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != expected:
                os._exit(1)  # no cleanup: the parent's death is the signal, as with SIGKILL

    threading.Thread(target=watch, name="lifeline", daemon=True).start()
